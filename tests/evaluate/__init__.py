"""Tests of roboloop.evaluate."""
