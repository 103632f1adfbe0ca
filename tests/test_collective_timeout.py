"""The trainers' collective timeout comes from the plan (train.collective_timeout_s), not Ray's 1800 s default.

At each checkpoint rank 0 waits for the sampler and the grader (`after_checkpoint`) while the other ranks sit in a
collective; a wait longer than the process group's timeout kills the trial (NCCL's watchdog; gloo raises). Two gloo
ranks train a tiny model with a slow fake sampler on rank 0 (test-only: it sleeps): with the timeout the plan would
give (its wait with a margin) the run passes; with a timeout shorter than the wait it fails, so the knob reaches the
group. The plan's rule itself is table-tested below."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fresh_process import run_ranks_in_fresh_processes

from orchestrator.plan_time import COLLECTIVE_TIMEOUT_FLOOR_S, collective_timeout_s
from workers.train import TrainSpec, wait_limit_s

SAMPLER_S = 6.0  # the fake sampler's time per checkpoint


def train_with_slow_sampler(spec: TrainSpec, out: str, rank: int) -> None:
    from workers.train import train

    examples = [{"prompt": f"why is the sky blue? ({i})", "completion": "light scatters"} for i in range(8)]
    train(spec, examples, Path(out), lambda step, adapter, info: None, log=lambda line: None,
          after_checkpoint=lambda step: time.sleep(SAMPLER_S))


def spec_for(model: Path, timeout_s: float) -> TrainSpec:
    return TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=["q_proj", "v_proj"], lr=1e-3,
                     seed=0, max_steps=2, checkpoint_steps=[1, 2], batch_size=2, micro_batch_size=1, zero_stage=3,
                     collective_timeout_s=timeout_s)


def test_the_plans_timeout_covers_its_longest_wait_with_a_margin() -> None:
    assert collective_timeout_s(10.0) == COLLECTIVE_TIMEOUT_FLOOR_S  # never below Ray Train's default
    assert collective_timeout_s(3000.0) == 9000.0  # a 235B sampler restart plus a judge: 3x
    for timeout in (30.0, 1800.0, 9000.0):
        assert wait_limit_s(timeout) < timeout  # rank 0 gives up (naming the knob) before the watchdog fires


def test_plan_prints_and_resolves_the_timeout() -> None:
    from orchestrator.config import compose_config
    from orchestrator.resolve import resolve_with_plan

    cfg, plan = resolve_with_plan(compose_config(["model=qwen3_30b_a3b", "cluster=slurm"]))
    time_section = plan.sections["time"]
    assert time_section["checkpoint_wait_s"] > 0
    assert cfg.train.collective_timeout_s == time_section["collective_timeout_s"] >= COLLECTIVE_TIMEOUT_FLOOR_S
    explicit, _ = resolve_with_plan(compose_config(["model=qwen3_30b_a3b", "cluster=slurm",
                                                    "train.collective_timeout_s=7200"]))
    assert explicit.train.collective_timeout_s == 7200.0


@pytest.mark.integration
def test_a_slow_sampler_on_rank0_survives_the_plans_timeout_and_not_a_shorter_one(tmp_path: Path) -> None:
    from test_train_levers import build_tiny_dense

    model = tmp_path / "dense"
    build_tiny_dense(model)
    # the plan's timeout for a wait of SAMPLER_S, at test scale (the floor of 1800 s would hide a wrong wiring)
    run_ranks_in_fresh_processes(train_with_slow_sampler, (spec_for(model, 4 * SAMPLER_S), str(tmp_path / "ok")), 2,
                                 240, "two ranks, a slow sampler, the plan's timeout")
    assert (tmp_path / "ok" / "adapters").is_dir()
    with pytest.raises(pytest.fail.Exception, match="exited with"):
        run_ranks_in_fresh_processes(train_with_slow_sampler, (spec_for(model, SAMPLER_S / 3), str(tmp_path / "short")),
                                     2, 240, "two ranks, a slow sampler, a timeout shorter than its wait")


def test_rank0_waits_for_samples_at_most_short_of_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking drain (a paused pack waiting for its samples, an early-stopping wait) asks Ray for the samples with
    a bound short of the collective timeout and fails naming the knob; before, it waited without one. The sampler
    here never answers (a fake `ray.wait`: scheduling logic only)."""
    from collections import deque
    from types import SimpleNamespace

    import ray

    from orchestrator.trial import Trial

    asked: list[float | None] = []

    def never_ready(refs: list, timeout: float | None = None) -> tuple[list, list]:
        asked.append(timeout)
        return [], refs

    monkeypatch.setattr(ray, "wait", never_ready)
    trial = SimpleNamespace(capability=None, pending=deque([(4, "ref", {}, 0.0)]), timing={"eval_wait_s": 0.0},
                            spec=SimpleNamespace(collective_timeout_s=600.0), name="lr1e-3_s0")
    Trial.drain(trial, block=False)  # a poll between steps: no wait at all
    with pytest.raises(TimeoutError, match=r"step 4's samples took over 540 s.*collective_timeout_s=600"):
        Trial.drain(trial, block=True)
    assert asked == [0, wait_limit_s(600.0)]
