"""Analyze: pure functions over rollout tables: success by any condition, paired comparison,
failures and their modes (`rollouts`); coverage on start states, gap ranking and plan
proposals (`gaps`); demonstration value, written as `signals.value` (`value`)."""
