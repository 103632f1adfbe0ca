"""The trainers' collective timeout reaches the process group (train.collective_timeout_s).

At each checkpoint rank 0 waits for the sampler and the grader (`after_checkpoint`) while the other ranks sit in a
collective; a wait longer than the process group's timeout kills the trial (NCCL's watchdog; gloo raises). Two gloo
ranks train a tiny model with a slow fake sampler on rank 0 (test-only: it sleeps): with the timeout the plan would
give (its wait with a margin) the run passes; with a timeout shorter than the wait it fails, so the knob reaches the
group. The plan's rule itself: tests/unit/test_collective_timeout.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fresh_process import run_ranks_in_fresh_processes
from tiny_dense import build_tiny_dense

from workers.train.config import unplanned
from workers.train.trainer import TrainSpec

SAMPLER_S = 6.0  # the fake sampler's time per checkpoint


def train_with_slow_sampler(spec: TrainSpec, out: str, rank: int) -> None:
    from workers.train.trainer import train

    examples = [{"prompt": f"why is the sky blue? ({i})", "completion": "light scatters"} for i in range(8)]
    train(spec, examples, Path(out), lambda step, adapter, info: None, log=lambda line: None,
          after_checkpoint=lambda step: time.sleep(SAMPLER_S))


def spec_for(model: Path, timeout_s: float) -> TrainSpec:
    return TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=["q_proj", "v_proj"], lr=1e-3,
                     seed=0, max_steps=2, checkpoint_steps=[1, 2],
                     train=unplanned(batch_size=2, micro_batch_size=1, zero_stage=3, collective_timeout_s=timeout_s))


def test_a_slow_sampler_on_rank0_survives_the_plans_timeout_and_not_a_shorter_one(tmp_path: Path) -> None:
    model = tmp_path / "dense"
    build_tiny_dense(model)
    # the plan's timeout for a wait of SAMPLER_S, at test scale (the floor of 1800 s would hide a wrong wiring)
    run_ranks_in_fresh_processes(train_with_slow_sampler, (spec_for(model, 4 * SAMPLER_S), str(tmp_path / "ok")), 2,
                                 240, "two ranks, a slow sampler, the plan's timeout")
    assert (tmp_path / "ok" / "adapters").is_dir()
    with pytest.raises(pytest.fail.Exception, match="exited with"):
        run_ranks_in_fresh_processes(train_with_slow_sampler, (spec_for(model, SAMPLER_S / 3), str(tmp_path / "short")),
                                     2, 240, "two ranks, a slow sampler, a timeout shorter than its wait")
