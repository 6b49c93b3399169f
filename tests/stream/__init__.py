"""Tests of roboloop.stream."""
