"""Refine: derived per-episode signals and quality flags written as layers (`layers`), and
outcomes re-judged by verified replay (`outcomes`) or labelled by a person (`labels`) into an `outcome` layer."""
