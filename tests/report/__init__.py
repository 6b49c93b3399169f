"""Tests of roboloop.report."""
