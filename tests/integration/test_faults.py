"""Faults survived with real process kills on the toy: a trainer, then the whole sweep driver mid-pack. (That a
resumed sweep leaves its finished trials alone: tests/integration/test_interrupt_sweep.py.)

Each test runs a small real sweep (Ray Tune, DeepSpeed, vLLM) in a subprocess (tests/support/sweep_process.py) and
kills part of it.
"""

import json
import os
import signal

import psutil
from sweep_process import FAST, resume, start, state_step, wait_for


def _title(process):
    """The process title (Ray and vLLM set one), or "" for a process that just exited."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def kill_sweep(proc):
    """Kill the driver and everything it started (Ray, trainers, the vLLM engine), as a lost node would; only this
    sweep's processes: a Ray cluster the user runs beside the tests is left alone."""
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)


def rows_of(trial_dir):
    return [json.loads(line) for line in (trial_dir / "metrics.jsonl").open()]


def assert_exact_rows(trial_dir, max_steps, checkpoints):
    rows = rows_of(trial_dir)
    assert sorted(r["step"] for r in rows if r["kind"] == "eval") == checkpoints
    assert sorted(r["step"] for r in rows if r["kind"] == "train") == list(range(1, max_steps + 1))
    assert sorted(p.name for p in (trial_dir / "samples").iterdir()) == [f"step_{s:05d}.jsonl" for s in checkpoints]


def test_killed_trainer_resumes_from_its_last_checkpoint(cache_dir, tmp_path):
    out = tmp_path / "run"
    with open(tmp_path / "log.txt", "w") as log:
        proc = start(["sweep.lrs=[3e-3]", "sweep.max_steps=16", *FAST, f"hydra.run.dir={out}"], cache_dir, log)
        state = out / "trials" / "lr0.003000_seed0" / "state" / "resume.json"
        wait_for(lambda: state_step(state) >= 2, proc, timeout=900)
        trainers = [p for p in psutil.Process(proc.pid).children(recursive=True) if _title(p).startswith("ray::Impl")]
        assert trainers, "no trainer process found"
        for p in trainers:
            p.kill()
        rc = proc.wait(timeout=900)
    assert rc == 0, (tmp_path / "log.txt").read_text()[-3000:]
    trial = out / "trials" / "lr0.003000_seed0"
    attempts = [json.loads(line) for line in (trial / "attempts.jsonl").open()]
    assert len(attempts) == 2 and attempts[0]["resumed_from"] is None and attempts[1]["resumed_from"] >= 2
    assert_exact_rows(trial, 16, [0, 1, 2, 4, 8, 16])
    summary = json.loads((out / "summary.json").read_text())
    assert summary[0]["complete"]


def test_killed_driver_mid_pack_then_resume_restores_every_member(cache_dir, tmp_path):
    """A pack of two (one trainer, one state in packs/) loses its whole driver after its state passed step 2;
    `sweep resume=` restores both members from the pack's state and each ends with exactly the rows of an
    undisturbed run."""
    out = tmp_path / "run"
    args = ["sweep.lrs=[1e-3,3e-3]", "sweep.max_steps=16", "sweep.pack=2", *FAST]
    state = out / "packs" / "lr0.001000_seed0_k2" / "state" / "resume.json"

    with open(tmp_path / "log.txt", "w") as log:
        proc = start([*args, f"hydra.run.dir={out}"], cache_dir, log)
        wait_for(lambda: state_step(state) >= 2, proc, timeout=900)
        kill_sweep(proc)
    assert not list(out.glob("trials/*/result.json")), "the pack finished before the kill: nothing was resumed"
    resume(out, cache_dir)
    for name in ("lr0.001000_seed0", "lr0.003000_seed0"):
        trial = out / "trials" / name
        attempts = [json.loads(line) for line in (trial / "attempts.jsonl").open()]
        assert attempts[0]["resumed_from"] is None and attempts[-1]["resumed_from"] >= 2, attempts
        assert_exact_rows(trial, 16, [0, 1, 2, 4, 8, 16])
    assert json.loads(state.read_text())["step"] == 16
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 2 and all(row["complete"] for row in summary)
