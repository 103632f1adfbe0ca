"""`submit` a toy sweep to a real single-node Slurm (munged + slurmctld + slurmd started by the test), wait for
the job, and check the run folder and `status`. No mocked sbatch: the job runs the rendered slurm/sweep.sbatch,
which starts a Ray head with `ray start`, runs the sweep driver and stops Ray.

Needs Debian's `slurm-wlm` and `munge` (.ci/run installs them); skipped without them unless
LRSWEEP_REQUIRE_SLURM=1 (CI sets it, so there a missing Slurm fails instead).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from slurm_cluster import SlurmCluster, free_port, missing_binaries

from eval.runfiles import read_jsonl
from orchestrator.commands.status import sweep_status
from orchestrator.plan.keep_adapters import adapters_to_keep
from workers.train.state import read_resume_point

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 1200
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
FAKE_SECRET = "sk-test-do-not-leak-0123456789"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = missing_binaries()
    if missing and os.environ.get("LRSWEEP_REQUIRE_SLURM") != "1":
        pytest.skip(f"Slurm not installed ({missing}): apt-get install -y slurm-wlm munge")
    import wandb

    # the submitting process runs a W&B service of its own (as a notebook or an earlier in-process sweep's
    # report run would): sbatch exports its WANDB_SERVICE, and the job must not log into that service
    wandb.setup()
    assert os.environ.get("WANDB_SERVICE")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        before = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(cluster.conf)  # for the in-process `sweep_status`
        yield cluster
        if before is None:
            os.environ.pop("SLURM_CONF")
        else:
            os.environ["SLURM_CONF"] = before
    wandb.teardown()


def cli(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def wait_for_job(sweep_dir, env, log):
    """Poll `status` (in this process: a CLI call every few seconds would take CPU from the job) until the
    job ends; returns (every Slurm state seen, the final status)."""
    seen, deadline = [], time.time() + JOB_TIMEOUT_S
    while time.time() < deadline:
        st = sweep_status(sweep_dir)
        seen.append(st["job"]["state"])
        if st["job"]["state"] in ENDED:
            return seen, st
        time.sleep(5)
    pytest.fail(f"job did not end within {JOB_TIMEOUT_S}s; seen {seen[-5:]}\n{log()}")


def submit_toy(slurm, cache_dir, sweep_dir, *overrides):
    """`submit` a toy sweep (CPU, W&B offline, 20+20 prompts); returns (job id, client env, log reader)."""
    env = slurm.env() | {"LRSWEEP_CACHE": str(cache_dir), "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": FAKE_SECRET}
    env.pop("WANDB_API_KEY", None)
    proc = cli(["submit", "cluster=slurm", "cluster.gpus_per_node=0", f"cluster.ray_port={free_port()}",
                "sample.n_eval_prompts=20", "sample.n_train_prompts=20", "tracker.mode=offline",
                f"hydra.run.dir={sweep_dir}", *overrides], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = json.loads((sweep_dir / "slurm" / "jobs.jsonl").read_text().splitlines()[-1])["job_id"]
    assert f"submitted job {job_id}" in proc.stdout

    def log():
        out = sweep_dir / "slurm" / f"slurm-{job_id}.out"
        return (out.read_text()[-6000:] if out.exists() else "(no job log)") + "\n" + slurm.log("slurmd")

    return job_id, env, log


def test_slurm_delivers_the_warning_to_the_scripts_trap(slurm, tmp_path):
    """The batch script's warning trap under a real slurmd: `--signal=B:USR1@<s>` signals the batch shell, as
    `scancel --batch --signal=USR1` does at once; the trap touches the save request while the driver (here a
    stand-in that ends once it sees the request) keeps running, and the driver's status is the job's."""
    from orchestrator.commands.submit import TEMPLATE

    template = TEMPLATE.read_text()
    trap = template[template.index("ask_trainers_to_save_state() {"):template.index('cd "$LRSWEEP_ROOT"')]
    tail = template[template.index("# in the background"):]
    request = tmp_path / "save_state.request"
    driver = tmp_path / "driver"
    driver.write_text('#!/bin/bash\nfor _ in $(seq 600); do [ -e "$LRSWEEP_SAVE_REQUEST" ] && exit 0; sleep 0.1; '
                      "done\nexit 1\n")
    driver.chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --signal=B:USR1@600\n#SBATCH --output={tmp_path}/job.out\n"
                      f"set -euo pipefail\nexport LRSWEEP_PYTHON={driver} LRSWEEP_SAVE_REQUEST={request} "
                      f"LRSWEEP_SWEEP_DIR={tmp_path}\n"
                      f"echo started\n{trap}{tail}")
    env = slurm.env()
    proc = subprocess.run(["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    out = tmp_path / "job.out"

    def state():
        q = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
        return dict(f.split("=", 1) for f in q.split() if "=" in f)

    deadline = time.time() + 120
    while not (out.exists() and "started" in out.read_text()):
        assert time.time() < deadline, f"job {job_id} did not start: {state().get('JobState')}"
        time.sleep(0.5)
    time.sleep(1.0)  # past `echo started`: the driver runs and the shell waits on it
    assert not request.exists()
    proc = subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    while state().get("JobState") not in ENDED:
        assert time.time() < deadline, f"job {job_id} did not end after the signal\n{out.read_text()}"
        time.sleep(0.5)
    job = state()
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), f"{job}\n{out.read_text()}"
    assert request.exists() and "[slurm] warning signal" in out.read_text()


def test_the_warning_signal_saves_state_between_checkpoints_and_a_requeue_resumes_there(slurm, cache_dir, tmp_path):
    """Slurm's warning (`--signal=B:USR1`, sent here at once with `scancel --batch --signal=USR1`) reaches the
    trainer inside Ray through the batch script's trap and the sweep folder's save request: the trainer saves its
    state after its current step, between checkpoints; a requeue then resumes from that step, not the checkpoint
    before it, and the trial still ends with the rows of an undisturbed run. (This is also the plain requeue test:
    a preempted job restarts under its id and resumes its sweep; a separate one cost CI ~160 s.)"""
    sweep_dir = tmp_path / "sweep"
    job_id, env, log = submit_toy(slurm, cache_dir, sweep_dir, "sweep.lrs=[1e-3]", "sweep.max_steps=32")
    assert "--signal=B:USR1@600" in (sweep_dir / "slurm" / "sweep.sbatch").read_text()
    trial = sweep_dir / "trials" / "lr0.001000_seed0"
    checkpoints = [0, 1, 2, 4, 8, 16, 32]

    def state_step():
        point = read_resume_point(trial / "state")
        return point["step"] if point else 0

    deadline = time.time() + JOB_TIMEOUT_S
    while state_step() < 8:  # then steps 9..15 lie between checkpoints
        assert time.time() < deadline, f"no trainer state at step 8 within {JOB_TIMEOUT_S}s\n{log()}"
        time.sleep(0.2)
    proc = subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    while state_step() in checkpoints:
        assert state_step() < 16, f"no state saved between checkpoints 8 and 16 after the signal\n{log()}"
        time.sleep(0.05)
    saved = state_step()
    proc = subprocess.run(["scontrol", "requeue", job_id], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    seen, st = wait_for_job(sweep_dir, env, log)
    assert st["job"]["state"] == "COMPLETED", f"{st['job']}\n{log()}"
    # the requeued run rewrites the job's .out, so the first run's trap line may be gone: the state saved between
    # checkpoints (above) is what shows the signal reached the trainer
    assert f"job {job_id} (restart 1)" in log()
    attempts = read_jsonl(trial / "attempts.jsonl")
    assert len(attempts) == 2 and attempts[-1]["resumed_from"] >= saved, (attempts, saved)
    assert attempts[-1]["resumed_from"] not in checkpoints or attempts[-1]["resumed_from"] >= 16, attempts
    rows = read_jsonl(trial / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 33))
    assert [r["step"] for r in rows if r["kind"] == "eval"] == checkpoints
    assert {"PENDING", "RUNNING"} & set(seen)  # status reported the live job, not only its end
    check_the_run_folder_and_status(sweep_dir, job_id, env, log, checkpoints)


def check_the_run_folder_and_status(sweep_dir, job_id, env, log, checkpoints):
    """What a finished Slurm sweep leaves (this was its own 2-LR submit test; one sweep carries both, ~110 s of CI):
    the job's own Ray head started and stopped with nothing left over, a complete run folder with W&B offline runs,
    adapters kept around the transfer (keep_adapters=auto on Slurm), no secret in any file, and `status`."""
    text = log()
    assert "Ray cluster ready: 1 node(s)" in text and "[sweep] done" in text
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if f"lrsweep-ray-{job_id}/" in " ".join(p.info["cmdline"] or [])]
    assert not left, f"Ray processes of job {job_id} outlived it: {left}"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert len(summary) == 1
    row = summary[0]
    assert row["complete"] and row["max_steps"] == checkpoints[-1] and row["n_eval"] == 20
    assert [s for s, _ in row["eval_curve"]] == checkpoints
    trial = sweep_dir / "trials" / row["trial"]
    for name in ("config.json", "metrics.jsonl", "result.json"):
        assert (trial / name).exists(), name
    for step in checkpoints:
        assert (trial / "samples" / f"step_{step:05d}.jsonl").exists()
    kept = sorted(p.name for p in (trial / "adapters").glob("step_*"))
    curve = [(int(step), float(rate)) for step, rate in row["eval_curve"]]
    assert kept == [f"step_{s:05d}" for s in sorted(adapters_to_keep("around_transfer", curve, 0.5))], kept
    assert (trial / "adapters" / f"step_{checkpoints[-1]:05d}" / "adapter_model.safetensors").exists()
    assert list(trial.glob("wandb/offline-run-*"))  # W&B offline on the compute node
    for name in ("config.yaml", "slurm/sweep.sbatch", f"slurm/slurm-{job_id}.out"):
        assert FAKE_SECRET not in (sweep_dir / name).read_text(), f"secret leaked into {name}"

    proc = cli(["status", str(sweep_dir)], env)
    assert proc.returncode == 0, proc.stderr
    assert f"job {job_id} COMPLETED" in proc.stdout and "1 trials: 1 done" in proc.stdout
    assert "steps-to-transfer" in proc.stdout  # the last column (issue 27)
    cols = next(line.split() for line in proc.stdout.splitlines() if line.startswith(row["trial"]))
    last = checkpoints[-1]
    assert cols[1:3] == ["done", f"{last}/{last}"] and cols[cols.index(f"@{last}") - 1] == f"{curve[-1][1]:.2f}"
