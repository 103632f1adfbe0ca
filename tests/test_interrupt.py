"""Ctrl-C is a pause, not a failure (issue 28): SIGINT or SIGTERM to the sweep driver ends the sweep as interrupted,
exit 130 / 143, the resume command as the last line, no trial `failed`; `sweep resume=` then finishes it with the
rows an undisturbed run writes. The signal handling is unit-tested here; the real sweep runs under `integration`.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.interrupt import (
    INTERRUPTED_FILE,
    StopOnSignal,
    SweepInterrupted,
    clear_interrupted,
    mark_interrupted,
    resume_line,
    run_stoppable,
)

ROOT = Path(__file__).resolve().parents[1]


def test_first_signal_asks_to_stop_the_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    said = []
    with StopOnSignal(said.append) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and "again to stop at once" in said[0]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the handlers before it are back


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_marks_the_folder_and_names_the_resume_command(tmp_path, signum, status):
    def run(stop):
        os.kill(os.getpid(), signum)  # a signal while the trials run; the runner then returns (Tune stopped them)
        return []

    with pytest.raises(SweepInterrupted) as caught:
        run_stoppable(run, tmp_path, ["lr0.001_seed0"], 16, 0.0, lambda _: None)
    assert caught.value.exit_status == status
    assert str(caught.value) == resume_line(tmp_path)
    assert json.loads((tmp_path / INTERRUPTED_FILE).read_text())["signal"] == signal.Signals(signum).name
    clear_interrupted(tmp_path)
    assert not (tmp_path / INTERRUPTED_FILE).exists()


def test_status_says_interrupted(tmp_path):
    from eval.runfiles import write_text_atomic
    from orchestrator.config import compose_config
    from orchestrator.status_cmd import format_status, sweep_status
    from orchestrator.sweep import config_yaml

    write_text_atomic(tmp_path / "config.yaml", config_yaml(compose_config([])))
    assert "interrupted (" not in format_status(sweep_status(tmp_path))
    mark_interrupted(tmp_path, signal.SIGINT)
    text = format_status(sweep_status(tmp_path))
    assert f"interrupted (SIGINT): resume with `python -m orchestrator sweep resume={tmp_path}`" in text


def _train_and_eval_rows(trial_dir):
    """Every training step's loss (bit for bit) and the evaluated steps, each once. Eval rates are left out: two
    undisturbed runs already differ at step 0, the untouched model (vLLM's CPU sampling is not bit-reproducible)."""
    rows = [json.loads(line) for line in (trial_dir / "metrics.jsonl").open()]
    train = [(r["step"], r["train_loss"]) for r in sorted(rows, key=lambda r: r["step"]) if r["kind"] == "train"]
    return train, sorted(r["step"] for r in rows if r["kind"] == "eval")


@pytest.mark.integration
def test_sigint_to_the_driver_pauses_the_sweep_and_resume_finishes_it(cache_dir, tmp_path):
    from test_faults import FAST, resume, start, state_step, wait_for

    args = ["sweep.lrs=[3e-3]", "sweep.max_steps=16", *FAST]
    from eval.runfiles import trial_name

    out, trial = tmp_path / "run", trial_name(3e-3, 0)
    with open(tmp_path / "log.txt", "w") as log:
        proc = start([*args, f"hydra.run.dir={out}"], cache_dir, log)
        wait_for(lambda: state_step(out / "trials" / trial / "state" / "resume.json") >= 2, proc, timeout=900)
        os.kill(proc.pid, signal.SIGINT)  # the driver only, as `kill -INT` would
        rc = proc.wait(timeout=600)
    text = (tmp_path / "log.txt").read_text()
    assert rc == 130, text[-3000:]
    assert text.strip().splitlines()[-1] == f"interrupted: resume with `python -m orchestrator sweep resume={out}`"
    assert "Tuner.restore" not in text and f"incomplete: {trial} (step" in text, text[-3000:]
    assert not list(out.glob("trials/*/error.json")) and not (out / "trials" / trial / "result.json").exists()
    assert not (out / "summary.json").exists()  # no summary of a sweep that did not finish
    status = subprocess.run([sys.executable, "-m", "orchestrator", "status", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert "interrupted (SIGINT)" in status.stdout, status.stdout + status.stderr

    resume(out, cache_dir)
    assert not (out / INTERRUPTED_FILE).exists()
    assert json.loads((out / "summary.json").read_text())[0]["complete"]
    reference = tmp_path / "undisturbed"
    done = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", *args, f"hydra.run.dir={reference}"],
                          cwd=ROOT, env=os.environ | {"LRSWEEP_CACHE": str(cache_dir)}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _train_and_eval_rows(out / "trials" / trial) == _train_and_eval_rows(reference / "trials" / trial)
