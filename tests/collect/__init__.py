"""Tests of roboloop.collect."""
