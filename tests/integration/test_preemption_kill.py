"""Bounded preemption loss: trainer state saved between checkpoints (on a save request, as the Slurm job's warning
signal makes, or on a time interval), so a killed trial repeats only the steps since then, and its files end with
exactly the rows of an undisturbed run.

A tiny random Qwen3 trains for 16 steps (checkpoints 0, 1, 2, 4, 8, 16) through `workers.train.trainer.train` under
ZeRO-3
in fresh processes; the checkpoint hook writes the rows the sweep's trial writes (a train row per step, an eval row
per checkpoint). At step 13 a save is asked for, after step 14 the trainer is killed (SIGKILL: no clean-up), then
the trial folder is reconciled as a sweep's trial does and training resumes. With state saved only at checkpoints it
would resume from step 8 and repeat 6 steps; here it resumes from 13 and repeats 1.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fresh_process import run_ranks_in_fresh_processes, start_ranks
from tiny_dense import build_tiny_dense

from eval.metrics import checkpoint_steps
from eval.runfiles import append_jsonl, read_jsonl
from orchestrator.run.trial import reconcile_trial_dir
from workers.train.config import unplanned
from workers.train.state import SAVE_REQUEST, read_resume_point
from workers.train.trainer import TrainSpec

STEPS, BATCH, ASK_AT, KILL_AFTER = 16, 4, 13, 14
DEADLINE_S = 300
EXAMPLES = [{"prompt": f"why is the sky blue? ({i})", "completion": " ".join(["light scatters"] * (1 + i % 5))}
            for i in range(3 * BATCH)]


def train_trial(spec: TrainSpec, out: str, ask_at: int | None, kill_after: int | None, rank: int = 0) -> None:
    """One attempt of a trial. Rank 0 writes the rows a trial writes; the per-step poll (rank 0's) touches the
    save request after step `ask_at` and kills this process after step `kill_after`."""
    from workers.train.trainer import train

    trial = Path(out)

    def record(step: int, adapter: Path, info: dict) -> None:
        losses = info.get("step_losses", [])
        for i, loss in enumerate(losses):
            append_jsonl(trial / "metrics.jsonl", {"step": step - len(losses) + 1 + i, "kind": "train",
                                                   "train_loss": loss})
        append_jsonl(trial / "metrics.jsonl", {"step": step, "kind": "eval", "train_loss": info["train_loss"]})

    def poll(step: int) -> bool:
        if step == ask_at:
            Path(spec.save_request_file).touch()
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    clock: dict = {}
    start = train(spec, EXAMPLES, trial, record, log=lambda line: None, should_stop=poll, timings=clock)
    if rank == 0:
        append_jsonl(trial / "attempts.jsonl", {"start": start, "last_step": clock["last_step"]})


def killed_attempt(spec: TrainSpec, out: Path, world: int) -> None:
    procs = start_ranks(train_trial, (spec, str(out), ASK_AT, KILL_AFTER), world)
    deadline = time.monotonic() + DEADLINE_S
    for proc in procs:  # rank 0 kills itself; its peers then fail on the broken group
        proc.join(max(1.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for proc in alive:
        proc.kill()
        proc.join()
    assert procs[0].exitcode == -signal.SIGKILL, f"rank 0 was not killed after step {KILL_AFTER} ({procs[0].exitcode})"
    assert not alive, "a surviving rank hung after rank 0 died"


def rows(trial: Path) -> list[tuple]:
    return [(r["step"], r["kind"], r["train_loss"]) for r in read_jsonl(trial / "metrics.jsonl")]


@pytest.mark.parametrize("trigger, world", [("request", 2), ("interval", 1)])
def test_a_killed_trial_repeats_only_the_steps_since_its_last_state(tmp_path: Path, trigger: str, world: int) -> None:
    model = tmp_path / "tiny_dense"
    build_tiny_dense(model)
    spec = TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=["q_proj", "v_proj"], lr=1e-3,
                     seed=0, max_steps=STEPS, checkpoint_steps=checkpoint_steps(STEPS), max_seq_len=64,
                     train=unplanned(batch_size=BATCH, micro_batch_size=BATCH // world, zero_stage=3, state_every_s=0))
    assert ASK_AT not in spec.checkpoint_steps and KILL_AFTER not in spec.checkpoint_steps
    request = tmp_path / SAVE_REQUEST
    # request: the Slurm job's warning touches the sweep folder's file; interval: state after every step (the
    # smallest interval; its clock is tested in tests/unit/test_preemption.py), killed before the save after step
    # KILL_AFTER
    if trigger == "request":
        spec = replace(spec, save_request_file=str(request))
    else:
        spec = spec.with_train(state_every_s=1e-9)

    undisturbed = tmp_path / "undisturbed"
    run_ranks_in_fresh_processes(train_trial, (spec, str(undisturbed), None, None), world, DEADLINE_S, "training")

    trial = tmp_path / "trial"
    killed_attempt(spec, trial, world)
    point = read_resume_point(trial / "state")
    assert point is not None and point["step"] == ASK_AT, point
    assert [d.name for d in (trial / "state").glob("step_*")] == [point["tag"]]  # only the latest state is kept
    reconcile_trial_dir(trial, point["step"])  # what a trial does before it trains again
    run_ranks_in_fresh_processes(train_trial, (spec, str(trial), None, None), world, DEADLINE_S, "resumed training")

    [attempt] = read_jsonl(trial / "attempts.jsonl")
    assert (attempt["start"], attempt["last_step"]) == (ASK_AT, STEPS)
    repeated = KILL_AFTER - attempt["start"]  # trained before the kill and again after the resume
    assert repeated <= KILL_AFTER - ASK_AT == 1
    got, want = rows(trial), rows(undisturbed)
    assert [r[:2] for r in got] == [r[:2] for r in want]  # every step's train row and every checkpoint's eval row
    assert got[0] == want[0] == (0, "eval", None)  # the base model's checkpoint: no loss yet
    assert [r[2] for r in got[1:]] == pytest.approx([r[2] for r in want[1:]], rel=1e-5)
