"""Tests of roboloop.record."""
