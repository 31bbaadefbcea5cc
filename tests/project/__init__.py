"""Checks of the project as a whole: ruff and mypy, the README, the wheel, server.json."""
