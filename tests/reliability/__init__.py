"""Cross-cutting reliability suites: fault injection (kill -9 inside writes), concurrent writers, safety, hostile inputs, data and limits."""
