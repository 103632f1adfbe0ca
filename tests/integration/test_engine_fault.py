"""The vLLM engine process killed mid-sweep, with fake secrets in the environment.

One small real sweep (Ray Tune, DeepSpeed, vLLM, W&B offline) runs with fake API keys set. Once the first
checkpoints are evaluated the engine process (vLLM's EngineCore) is killed with SIGKILL. The sampler must
start a new engine and retry, so every checkpoint is still evaluated; and no key may appear in any file the
sweep wrote (configs, logs, samples, W&B offline runs, reports) or in its terminal output.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_KEYS = {
    "WANDB_API_KEY": "lrsweepfakewandbkey0123456789abcdef01234",  # W&B keys are 40 characters
    "OPENAI_API_KEY": "sk-lrsweep-fake-openai-key-never-to-be-written",
    "HF_TOKEN": "hf_lrsweepFakeHubTokenNeverToBeWritten",
}
CHECKPOINTS = [0, 1, 2, 4, 8, 16]


def engine_pids(root_pid):
    pids = set()
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if "EngineCore" in " ".join(p.cmdline()):
                pids.add(p.pid)
        except psutil.Error:  # exited while listed
            continue
    return pids


def eval_steps(metrics):
    if not metrics.exists():
        return []
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return sorted(r["step"] for r in rows if r.get("kind") == "eval")


@pytest.fixture(scope="module")
def killed_engine_sweep(cache_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine_fault")
    out = tmp / "run"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | FAKE_KEYS | {"LRSWEEP_CACHE": str(cache_dir)}
    args = ["sweep.lrs=[3e-3]", "sweep.max_steps=16", "tracker.mode=offline", "sample.n_eval_prompts=40",
            "sample.n_train_prompts=40", "sample.max_new_tokens=24", f"hydra.run.dir={out}"]
    log_path = tmp / "log.txt"
    metrics = out / "trials" / "lr0.003000_seed0" / "metrics.jsonl"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", *args], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 900
            while not (eval_steps(metrics) and max(eval_steps(metrics)) >= 1):
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.time() < deadline, "timed out before the first checkpoints were evaluated"
                time.sleep(0.2)
            killed = engine_pids(proc.pid)
            assert killed, "no vLLM EngineCore process found under the sweep"
            for pid in killed:
                psutil.Process(pid).kill()
            replaced = False
            while proc.poll() is None:  # watch for the replacement engine while the sweep finishes
                replaced = replaced or bool(engine_pids(proc.pid) - killed)
                assert time.time() < deadline, "timed out waiting for the sweep to finish"
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
    return out, proc.returncode, log_path.read_text(), killed, replaced


def test_a_killed_engine_is_replaced_and_no_checkpoint_goes_unevaluated(killed_engine_sweep):
    out, rc, log, killed, replaced = killed_engine_sweep
    assert rc == 0, log[-3000:]
    assert replaced, f"no new EngineCore appeared after killing {killed}"
    trial = out / "trials" / "lr0.003000_seed0"
    assert eval_steps(trial / "metrics.jsonl") == CHECKPOINTS
    for step in CHECKPOINTS:
        samples = (trial / "samples" / f"step_{step:05d}.jsonl").read_text().splitlines()
        assert len(samples) == 80 and all(json.loads(s)["grade"] in ("desired", "attack", "other") for s in samples)
    summary = json.loads((out / "summary.json").read_text())
    assert summary[0]["complete"] and [s for s, _ in summary[0]["eval_curve"]] == CHECKPOINTS


def test_no_secret_lands_in_any_output(killed_engine_sweep):
    out, rc, log, *_ = killed_engine_sweep
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files), "W&B offline wrote nothing: the check would prove little"
    assert (out / "config.yaml").exists() and (out / "report.md").exists()
    for name, secret in FAKE_KEYS.items():
        assert secret not in log, f"{name} printed to the terminal"
        leaks = [str(p.relative_to(out)) for p in files if secret.encode() in p.read_bytes()]
        assert not leaks, f"{name} written to {leaks}"
