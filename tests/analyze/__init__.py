"""Tests of roboloop.analyze."""
