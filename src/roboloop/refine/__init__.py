"""Refine: derived per-episode signals and quality flags written as layers (`layers`), and
outcomes re-judged by verified replay into an `outcome` layer (`outcomes`)."""
