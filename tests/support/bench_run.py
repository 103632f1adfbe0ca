"""Run a bench script as CI would (from the repository root, W&B off, the cache given) and require it to succeed."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(args, cache_dir, timeout=900):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir),
                                                                          "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
