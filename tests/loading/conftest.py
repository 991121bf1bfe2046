"""Fixtures for these tests: the shared tiny TRELLIS.2 release folder."""

from tests.fixtures.tiny_checkpoint import tiny_checkpoint  # noqa: F401
