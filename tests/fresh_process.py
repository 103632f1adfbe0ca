"""Run a training function in a fresh spawned process (the trainer owns its distributed group) with a deadline,
so a hang fails the test instead of blocking the suite."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest


def run_in_fresh_process(target: Callable[..., None], args: tuple[Any, ...], deadline_s: float, what: str) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join(deadline_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"{what} did not finish in {deadline_s}s (hang?)")
    assert proc.exitcode == 0, f"{what} exited with {proc.exitcode}"
