"""Tests of roboloop.refine."""
