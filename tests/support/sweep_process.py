"""A real toy sweep driven as a subprocess, for the tests that kill or interrupt part of it and resume it: start it,
wait for a condition while it runs, read a trainer state's step, `sweep resume=` it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAST = ["tracker.mode=disabled", "sample.n_eval_prompts=40", "sample.n_train_prompts=40", "sample.max_new_tokens=24"]


def _env(cache_dir):
    return {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir)}


def start(args, cache_dir, log):
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", *args], cwd=ROOT, env=_env(cache_dir),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition, proc, timeout):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the sweep ended before the fault could be injected"
        assert time.time() < deadline, "timed out waiting for the sweep"
        time.sleep(0.2)


def state_step(resume_json):
    """The step a trainer state's resume point holds (-1 while there is none, or it is being written)."""
    try:
        return json.loads(resume_json.read_text())["step"]
    except (OSError, ValueError):
        return -1


def resume(out, cache_dir):
    """`sweep resume=out`, which must succeed; its completed process."""
    resumed = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", f"resume={out}"], cwd=ROOT,
                             env=_env(cache_dir), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return resumed
