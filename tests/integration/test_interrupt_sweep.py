"""Ctrl-C is a pause, not a failure (issue 28), on a real toy sweep: SIGINT to the sweep driver ends the sweep as
interrupted, exit 130, the resume command as the last line, no trial `failed`; `sweep resume=` then finishes it with
the rows an undisturbed run writes. The signal handling itself: tests/unit/test_interrupt.py.
"""

import json
import os
import signal
import subprocess
import sys

from sweep_process import FAST, ROOT, resume, start, state_step, wait_for

from orchestrator.console.interrupt import INTERRUPTED_FILE


def _train_and_eval_rows(trial_dir):
    """Every training step's loss (bit for bit) and the evaluated steps, each once. Eval rates are left out: two
    undisturbed runs already differ at step 0, the untouched model (vLLM's CPU sampling is not bit-reproducible)."""
    rows = [json.loads(line) for line in (trial_dir / "metrics.jsonl").open()]
    train = [(r["step"], r["train_loss"]) for r in sorted(rows, key=lambda r: r["step"]) if r["kind"] == "train"]
    return train, sorted(r["step"] for r in rows if r["kind"] == "eval")


def test_sigint_to_the_driver_pauses_the_sweep_and_resume_finishes_only_what_is_missing(cache_dir, tmp_path):
    """Two trials one after the other; SIGINT while the second trains. The first is finished and stays as it was
    (not re-run); the second is incomplete, and `sweep resume=` ends it with the rows of an undisturbed run.
    (This also carries what test_faults' killed-driver-then-resume test checked: a separate sweep cost CI ~115 s.)"""
    from eval.runfiles import trial_name

    lrs = {trial_name(lr, 0): lr for lr in (1e-3, 3e-3)}
    args = ["sweep.lrs=[1e-3,3e-3]", "sweep.max_steps=16", "sweep.max_concurrent_trials=1", *FAST]
    out, names = tmp_path / "run", list(lrs)

    def second_trial_trained_2_steps():
        done = [n for n in names if (out / "trials" / n / "result.json").exists()]
        rest = [n for n in names if n not in done]
        return len(done) == 1 and state_step(out / "trials" / rest[0] / "state" / "resume.json") >= 2

    with open(tmp_path / "log.txt", "w") as log:
        proc = start([*args, f"hydra.run.dir={out}"], cache_dir, log)
        wait_for(second_trial_trained_2_steps, proc, timeout=900)
        os.kill(proc.pid, signal.SIGINT)  # the driver only, as `kill -INT` would
        rc = proc.wait(timeout=600)
    finished = next(out.glob("trials/*/result.json")).parent
    trial = next(n for n in names if n != finished.name)
    before = (finished / "metrics.jsonl").read_text()
    text = (tmp_path / "log.txt").read_text()
    assert rc == 130, text[-3000:]
    assert text.strip().splitlines()[-1] == f"interrupted: resume with `python -m orchestrator sweep resume={out}`"
    assert "Tuner.restore" not in text and f"incomplete: {trial} (step" in text, text[-3000:]
    assert "1 of 2 trials finished" in text, text[-3000:]
    assert not list(out.glob("trials/*/error.json")) and not (out / "trials" / trial / "result.json").exists()
    assert not (out / "summary.json").exists()  # no summary of a sweep that did not finish
    status = subprocess.run([sys.executable, "-m", "orchestrator", "status", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert "interrupted (SIGINT)" in status.stdout, status.stdout + status.stderr

    resumed = resume(out, cache_dir)
    assert "1 trials finished, 1 to run" in resumed.stdout
    assert (finished / "metrics.jsonl").read_text() == before  # not re-run
    assert len((finished / "attempts.jsonl").read_text().splitlines()) == 1
    assert not (out / INTERRUPTED_FILE).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 2 and all(row["complete"] for row in summary)
    reference = tmp_path / "undisturbed"  # the interrupted trial alone (the finished one was left as it ran)
    alone = [f"sweep.lrs=[{lrs[trial]}]", *args[1:]]
    done = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", *alone, f"hydra.run.dir={reference}"],
                          cwd=ROOT, env=os.environ | {"LRSWEEP_CACHE": str(cache_dir)}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _train_and_eval_rows(out / "trials" / trial) == _train_and_eval_rows(reference / "trials" / trial)
