"""Tests of roboloop.envs."""
