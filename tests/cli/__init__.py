"""Tests of roboloop.cli."""
