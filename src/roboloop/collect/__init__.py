"""Collect: the one rollout loop with its executors and seed reservation (`run`), and the
collection-plan type and its file format (`plan`; plans belong to collect) and its execution (`plan_run`)."""
