"""Tests of roboloop.train."""
