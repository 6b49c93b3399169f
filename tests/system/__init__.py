"""End-to-end tests across stages: the reduced demo and the glue of gaps and the report over a real catalog."""
