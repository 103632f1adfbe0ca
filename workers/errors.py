"""The one error bad config raises, in a module of its own at the lowest layer that raises it (workers/ checks
shapes too), so any module can raise it without importing the schema; orchestrator.schema re-exports it. With the
two helpers every config block's checks use."""

from __future__ import annotations

from typing import Any

from eval.errors import UserError
from eval.knobs import knob_errors


class ConfigError(UserError, ValueError):
    """A config value that would waste compute or corrupt results; the message names the fix."""


def require(ok: bool, message: str) -> None:
    """A config check: raise ConfigError(message) unless ok."""
    if not ok:
        raise ConfigError(message)


def require_knobs(block: Any, where: str) -> None:
    """Every value of a config block within its field's rule (eval/knobs.py), all problems in one message; `where`
    is the block's name as the command line spells it ("" for the root)."""
    errors = knob_errors(block, f"{where}." if where else "")
    require(not errors, "; ".join(errors))
