"""Tests of roboloop.catalog."""
