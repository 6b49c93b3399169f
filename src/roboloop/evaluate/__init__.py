"""Evaluate: grids, cell seeds and fixed-grid evaluations (`run`), evaluate-until-decided
against a baseline on paired seeds (`until_decided`), and the rollout index analysis reads
without a catalog restore (`index`)."""
