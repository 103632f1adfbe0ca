"""The one error bad config raises, in a module of its own at the lowest layer that raises it (workers/ checks
shapes too), so any module can raise it without importing the schema; orchestrator.schema re-exports it."""

from __future__ import annotations

from eval.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value that would waste compute or corrupt results; the message names the fix."""
