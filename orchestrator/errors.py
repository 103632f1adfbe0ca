"""The one error bad input raises: its own module, so any layer of orchestrator/ can raise it without
importing the schema (placement, planner, ranges)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that would waste compute or corrupt results; the message names the fix."""
