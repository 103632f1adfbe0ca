"""The trainers' collective timeout comes from the plan (train.collective_timeout_s), not Ray's 1800 s default.

At each checkpoint rank 0 waits for the sampler and the grader (`after_checkpoint`) while the other ranks sit in a
collective; a wait longer than the process group's timeout kills the trial (NCCL's watchdog; gloo raises). The
plan's rule is table-tested here, and rank 0's bounded wait for its samples; two gloo ranks with a slow sampler
against the plan's timeout and a shorter one: tests/integration/test_collective_timeout_ranks.py."""

from __future__ import annotations

import pytest

from orchestrator.plan.timing import COLLECTIVE_TIMEOUT_FLOOR_S, collective_timeout_s
from workers.train.trainer import wait_limit_s


def test_the_plans_timeout_covers_its_longest_wait_with_a_margin() -> None:
    assert collective_timeout_s(10.0) == COLLECTIVE_TIMEOUT_FLOOR_S  # never below Ray Train's default
    assert collective_timeout_s(3000.0) == 9000.0  # a 235B sampler restart plus a judge: 3x
    for timeout in (30.0, 1800.0, 9000.0):
        assert wait_limit_s(timeout) < timeout  # rank 0 gives up (naming the knob) before the watchdog fires


def test_plan_prints_and_resolves_the_timeout() -> None:
    from orchestrator.config import compose_config
    from orchestrator.plan.resolve import resolve_with_plan

    cfg, plan = resolve_with_plan(compose_config(["model=qwen3_30b_a3b", "cluster=slurm"]))
    time_section = plan.sections["time"]
    assert time_section["checkpoint_wait_s"] > 0
    assert cfg.train.collective_timeout_s == time_section["collective_timeout_s"] >= COLLECTIVE_TIMEOUT_FLOOR_S
    explicit, _ = resolve_with_plan(compose_config(["model=qwen3_30b_a3b", "cluster=slurm",
                                                    "train.collective_timeout_s=7200"]))
    assert explicit.train.collective_timeout_s == 7200.0


def test_rank0_waits_for_samples_at_most_short_of_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking drain (a paused pack waiting for its samples, an early-stopping wait) asks Ray for the samples with
    a bound short of the collective timeout and fails naming the knob; before, it waited without one. The sampler
    here never answers (a fake `ray.wait`: scheduling logic only)."""
    from collections import deque
    from types import SimpleNamespace

    import ray

    from orchestrator.run.trial import Trial

    asked: list[float | None] = []

    def never_ready(refs: list, timeout: float | None = None) -> tuple[list, list]:
        asked.append(timeout)
        return [], refs

    monkeypatch.setattr(ray, "wait", never_ready)
    trial = SimpleNamespace(capability=None, pending=deque([(4, "ref", {}, 0.0)]), timing={"eval_wait_s": 0.0},
                            spec=SimpleNamespace(train=SimpleNamespace(collective_timeout_s=600.0)), name="lr1e-3_s0")
    Trial.drain(trial, block=False)  # a poll between steps: no wait at all
    with pytest.raises(TimeoutError, match=r"step 4's samples took over 540 s.*collective_timeout_s=600"):
        Trial.drain(trial, block=True)
    assert asked == [0, wait_limit_s(600.0)]
