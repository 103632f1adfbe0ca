"""A sweep whose trial fails for good ends with a clean message, no traceback: each failed trial, its error's last
line and the real file of its full error (Tune's tune_<date>/.../error.txt). Real Ray, trainer and vLLM on the toy;
the trial fails on a corrupt trainer-state file it finds in its folder, before any checkpoint (bad config values
are refused before Ray starts, so they cannot make a trial fail). The toy is a tiny
one built in seconds: no trial gets as far as needing its behavior."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_TOY = ["model.toy.steps=2", "model.toy.vocab_size=400", "model.toy.hidden_size=32",
            "model.toy.intermediate_size=64", "model.toy.num_layers=1", "model.toy.batch_size=4",
            "sample.n_eval_prompts=4", "sample.n_train_prompts=4"]


def test_a_failed_trial_is_reported_cleanly_with_its_error_and_its_file(cache_dir, tmp_path):
    out = tmp_path / "run"
    state = out / "trials" / "lr0.001000_seed0" / "state"
    state.mkdir(parents=True)
    (state / "resume.json").write_text("{torn")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "sweep", "sweep.lrs=[1e-3]", "sweep.max_steps=2", "sweep.max_retries=0",
         "tracker.mode=disabled", f"hydra.run.dir={out}", *TINY_TOY],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error: 1 of 1 trials failed:" in proc.stderr and "lr0.001000_seed0: " in proc.stderr
    (row,) = json.loads((out / "summary.json").read_text())
    assert row["status"] == "failed" and row["lr_x_steps"] is None and row["lower_bound"] is None
    assert row["error"] and row["error"] in proc.stderr and "resume.json is corrupt" in row["error"]
    error_file = Path(row["error_file"])
    assert error_file.name == "error.txt" and error_file.exists() and error_file.parent.parent.name.startswith("tune_")
    assert str(error_file) in proc.stderr
    assert "failed (no checkpoint)" in proc.stdout and ">2 (" not in proc.stdout
