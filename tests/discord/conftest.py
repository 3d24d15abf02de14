"""Fixtures for end-to-end tests of the Discord adapter against the fake Discord."""

from tests.fixtures.fake_discord import fake_discord  # noqa: F401
