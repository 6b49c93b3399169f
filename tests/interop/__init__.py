"""Tests of roboloop.interop."""
