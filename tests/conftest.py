"""Shared pytest configuration. Fixture modules live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.netns",
    "tests.fixtures.lab",
]
