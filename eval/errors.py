"""The base class of every error a user's own input causes (a config value, a data file, a folder, an endpoint).

It lives at the lowest layer (eval/ imports nothing of the project) so that every layer may raise one. The command
line (orchestrator/__main__.py) catches it in one place: the message, which names the fix, then exit status 2,
never a traceback. Each subclass keeps its older base (ValueError, RuntimeError, FileNotFoundError) too, so code
that caught those still does.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave; the message says what is wrong and how to fix it."""
