"""Evaluate: grids, cell seeds and fixed-grid evaluations (`run`), evaluate-until-decided
against a baseline on paired seeds (`until_decided`). Each rollout is written to the rollout index
(`roboloop.catalog.index`) right after its registration, so analysis reads it without a restore."""
