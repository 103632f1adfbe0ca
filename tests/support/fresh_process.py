"""Run a training function in a fresh spawned process (the trainer owns its distributed group) with a deadline,
so a hang fails the test instead of blocking the suite."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest


def _then_end(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """Run target, then end the process without interpreter teardown, where gloo's threads can abort a process
    whose work is done (bench/load_memory.end_finished_rank). An exception in target still fails the process."""
    from bench.load_memory import end_finished_rank

    target(*args)
    end_finished_rank()


def run_in_fresh_process(target: Callable[..., None], args: tuple[Any, ...], deadline_s: float, what: str) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=_then_end, args=(target, args))
    proc.start()
    proc.join(deadline_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"{what} did not finish in {deadline_s}s (hang?)")
    assert proc.exitcode == 0, f"{what} exited with {proc.exitcode}"


def _as_rank(target: Callable[..., None], args: tuple[Any, ...], rank: int, world: int, port: int) -> None:
    """One rank of a torch.distributed group built from the environment, as a launcher would set it."""
    import os

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    _then_end(target, (*args, rank))


def start_ranks(target: Callable[..., None], args: tuple[Any, ...], world: int) -> list[Any]:
    """`target(*args, rank)` in `world` fresh processes that form one torch.distributed group (env://)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_as_rank, args=(target, args, rank, world, port)) for rank in range(world)]
    for proc in procs:
        proc.start()
    return procs


def run_ranks_in_fresh_processes(target: Callable[..., None], args: tuple[Any, ...], world: int, deadline_s: float,
                                 what: str) -> None:
    """`target(*args, rank)` in `world` fresh processes that form one gloo group; a rank that fails ends the
    others at once (its peers would wait on it until gloo's half-hour timeout), a hang fails at the deadline."""
    import time

    procs = start_ranks(target, args, world)
    deadline = time.monotonic() + deadline_s
    try:
        while any(p.is_alive() for p in procs):
            failed = [rank for rank, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if failed:
                pytest.fail(f"{what}: rank {failed[0]} exited with {procs[failed[0]].exitcode}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not finish in {deadline_s}s (hang?)")
            time.sleep(0.2)
        codes = [p.exitcode for p in procs]
        assert codes == [0] * world, f"{what}: exit codes {codes}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
