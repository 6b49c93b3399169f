"""Collect: the one rollout loop with its executors and seed reservation (`run`), and the
collection-plan type, its file format and its execution (`plan`; plans belong to collect)."""
