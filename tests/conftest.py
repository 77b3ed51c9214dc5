"""Shared fixtures. Each part of the product keeps its fixtures in its own plugin module."""

pytest_plugins = [
    "tests.fixtures.search_fixtures",
    "tests.fixtures.export_fixtures",
    "tests.fixtures.server_fixtures",
]
