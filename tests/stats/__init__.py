"""Tests of roboloop.stats."""
