"""The server fixtures (a real ``serve`` child with the fake generator) for the security tests."""

from tests.server.conftest import backend, image  # noqa: F401 - pytest fixtures
