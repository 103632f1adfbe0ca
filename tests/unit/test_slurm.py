"""Slurm submission without a cluster: config checks, the rendered script, secrets, sbatch errors, `status`."""

import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from eval.runfiles import append_jsonl, write_json
from orchestrator.commands.status import format_status, sweep_status
from orchestrator.commands.submit import (
    check_cluster,
    job_config,
    render_script,
    render_template,
    sbatch,
    secrets_in,
    submit,
)
from orchestrator.config import compose_config, load_resumed, to_typed
from orchestrator.run.sweep import check_sweep_folder, config_yaml
from orchestrator.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"WANDB_API_KEY": "wandb-secret-0123456789abcdef", "OPENAI_API_KEY": "sk-openai-secret-0123456789"}


def slurm_cfg(*overrides):
    return compose_config(["cluster=slurm", *overrides])


def test_shipped_slurm_cluster_composes_and_passes_its_checks():
    cfg = slurm_cfg()
    check_cluster(cfg.cluster)
    assert cfg.cluster.kind == "slurm" and cfg.cluster.requeue and cfg.cluster.offline


@pytest.mark.parametrize("override, message", [
    ("cluster.time_limit=forever", "cluster.time_limit='forever'"),
    ("cluster.time_limit=48h", "Slurm time"),
    ("cluster.nodes=0", "cluster.nodes=0"),
    ("cluster.ray_port=80", "cluster.ray_port=80"),
    ("cluster.storage=relative/dir", "absolute path"),
    ("cluster.sbatch_args=['-w']", "one long sbatch option"),
    ("cluster.partition='gpu;rm'", "cluster.partition"),
])
def test_bad_cluster_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_cluster(slurm_cfg(override).cluster)


@pytest.mark.parametrize("time_limit", ["30", "30:00", "48:00:00", "2-00", "2-12:00", "2-12:00:00"])
def test_slurm_time_forms_are_accepted(time_limit):
    check_cluster(slurm_cfg(f"cluster.time_limit='{time_limit}'").cluster)


def test_submit_refuses_a_local_cluster():
    with pytest.raises(ConfigError, match="submit needs cluster=slurm"):
        job_config(compose_config([]))


@pytest.mark.parametrize("offline, mode, key, expect", [
    (True, "auto", None, "offline"),
    (True, "auto", "k" * 12, "offline"),  # a key on the login node does not make compute nodes online
    (True, "offline", None, "offline"),
    (True, "disabled", None, "disabled"),
    (False, "auto", None, "auto"),  # resolved on the compute node, from the job's environment
    (False, "online", "k" * 12, "online"),
])
def test_tracker_mode_for_the_job(monkeypatch, offline, mode, key, expect):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    if key:
        monkeypatch.setenv("WANDB_API_KEY", key)
    cfg = job_config(slurm_cfg(f"cluster.offline={offline}", f"tracker.mode={mode}"))
    assert cfg.tracker.mode == expect and cfg.sweep.ray_address == "auto"


@pytest.mark.parametrize("offline, message", [(True, "cluster.offline=true"), (False, "WANDB_API_KEY is not set")])
def test_online_tracking_that_cannot_work_is_refused(monkeypatch, offline, message):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=message):
        job_config(slurm_cfg(f"cluster.offline={offline}", "tracker.mode=online"))


def test_offline_cluster_needs_a_local_model_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a local folder"):
        job_config(slurm_cfg("model.path=Qwen/Qwen3-235B-A22B"))
    (tmp_path / "config.json").write_text("{}")  # a model folder (validation checks for its config.json)
    assert job_config(slurm_cfg(f"model.path={tmp_path}")).model.path == str(tmp_path)
    assert job_config(slurm_cfg("model.path=Qwen/Qwen3-235B-A22B", "cluster.offline=false")).model.path


def directives(script):
    return [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_script_carries_the_cluster_config(tmp_path):
    cfg = job_config(slurm_cfg(
        "cluster.nodes=4", "cluster.partition=gpu", "cluster.account=proj", "cluster.qos=high",
        "cluster.time_limit=2-00:00:00", "cluster.cpus_per_node=96", "cluster.ray_port=7000",
        "cluster.sbatch_args=['--constraint=h100','--mem=0']",
        "cluster.setup=['module load cuda/12.4','source /shared/venv/bin/activate']"))
    script = render_script(cfg, tmp_path / "sw", "/usr/bin/python3")
    assert directives(script) == [
        "--job-name=lrsweep-wronglang_spanish", "--nodes=4", "--ntasks-per-node=1", "--time=2-00:00:00",
        f"--output={tmp_path}/sw/slurm/slurm-%j.out", "--open-mode=append", "--requeue", "--signal=B:USR1@600",
        "--cpus-per-task=96", "--gpus-per-node=8", "--partition=gpu", "--account=proj", "--qos=high",
        "--constraint=h100", "--mem=0"]
    for line in (f"export LRSWEEP_SWEEP_DIR={tmp_path}/sw", f"export LRSWEEP_ROOT={ROOT}",
                 "export LRSWEEP_PYTHON=/usr/bin/python3", f"export LRSWEEP_CACHE={cfg.cache_dir}",
                 "export LRSWEEP_GPUS_PER_NODE=8", "export LRSWEEP_RAY_PORT=7000", "export WANDB_MODE=offline",
                 "export HF_HUB_OFFLINE=1", "module load cuda/12.4\nsource /shared/venv/bin/activate"):
        assert line in script
    # set-up runs before anything uses Python; the driver always resumes the folder (first start = requeue)
    assert script.index("source /shared/venv") < script.index("ray.scripts.scripts start --head")
    assert '-m orchestrator sweep resume="$LRSWEEP_SWEEP_DIR" &' in script
    assert f"export LRSWEEP_SAVE_REQUEST={tmp_path}/sw/save_state.request" in script
    # the warning's trap is set before Ray starts: an untrapped USR1 would end the job's shell
    assert script.index("trap ask_trainers_to_save_state USR1") < script.index("ray.scripts.scripts start --head")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_the_warning_signal_asks_the_trainers_to_save_state(tmp_path):
    """The script's last part, run by bash as Slurm runs it: USR1 (the --signal warning, to the batch shell only)
    touches the save request the trainers poll, the driver keeps running, and its exit status is the job's."""
    import os
    import signal
    import time

    from orchestrator.commands.submit import TEMPLATE

    template = TEMPLATE.read_text()
    trap = template[template.index("ask_trainers_to_save_state() {"):template.index('cd "$LRSWEEP_ROOT"')]
    tail = template[template.index("# in the background"):]
    driver = tmp_path / "driver"  # stands in for the sweep driver: ends with 7 once it sees the request
    driver.write_text('#!/bin/bash\nfor _ in $(seq 300); do [ -e "$LRSWEEP_SAVE_REQUEST" ] && exit 7; sleep 0.1; '
                      "done\nexit 1\n")
    driver.chmod(0o755)
    request = tmp_path / "sw" / "save_state.request"
    request.parent.mkdir()
    env = os.environ | {"LRSWEEP_PYTHON": str(driver), "LRSWEEP_SAVE_REQUEST": str(request),
                        "LRSWEEP_SWEEP_DIR": str(tmp_path / "sw")}
    job = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + trap + tail], env=env,
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # bash has set the trap and started the driver
    assert job.poll() is None and not request.exists()
    job.send_signal(signal.SIGUSR1)
    assert job.wait(timeout=30) == 7  # the driver saw the request; its status is the job's
    assert request.exists() and "warning signal" in job.stdout.read()


def test_no_signal_when_turned_off(tmp_path):
    script = render_script(job_config(slurm_cfg("cluster.state_signal_s=0")), tmp_path, "/usr/bin/python3")
    assert not any(d.startswith("--signal") for d in directives(script))
    with pytest.raises(ConfigError, match="cluster.state_signal_s=-1"):
        check_cluster(slurm_cfg("cluster.state_signal_s=-1").cluster)


def test_whole_nodes_no_requeue_online_and_own_python(tmp_path):
    cfg = job_config(slurm_cfg("cluster.requeue=false", "cluster.offline=false", "cluster.gpus_per_node=0",
                               "cluster.python=/opt/py/bin/python"))
    script = render_script(cfg, tmp_path, "/usr/bin/python3")
    d = directives(script)
    assert "--no-requeue" in d and "--exclusive" in d and not any(x.startswith("--gpus") for x in d)
    assert "WANDB_MODE" not in script and "HF_HUB_OFFLINE" not in script
    assert "export LRSWEEP_PYTHON=/opt/py/bin/python" in script


def test_storage_is_where_the_sweep_folder_goes(tmp_path, monkeypatch):
    from orchestrator.commands.submit import default_sweep_dir

    cfg = slurm_cfg(f"cluster.storage={tmp_path}/shared")
    assert default_sweep_dir(cfg).parent == tmp_path / "shared" / "sweeps" / "wronglang_spanish"
    monkeypatch.chdir(tmp_path)
    assert default_sweep_dir(slurm_cfg()).parent == tmp_path / "sweeps" / "wronglang_spanish"


def test_a_dry_run_folder_is_apart_from_real_runs(tmp_path):
    """Issue 27: `submit --dry-run` wrote its folder beside real runs (sweeps/<setting>/); now under sweeps/_dry_run/,
    so sweeps/<setting>/ and its `latest` link hold real runs only."""
    proc = run_cli("submit", "cluster=slurm", f"cluster.storage={tmp_path}", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    (made,) = (tmp_path / "sweeps" / "_dry_run" / "wronglang_spanish").iterdir()
    assert (made / "config.yaml").exists() and (made / "slurm" / "sweep.sbatch").exists()
    assert sorted(p.name for p in (tmp_path / "sweeps").iterdir()) == ["_dry_run"]


def test_no_secret_reaches_the_script_or_config(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    cfg = slurm_cfg("cluster.offline=false", "tracker.mode=online",
                    "setting.teacher.endpoint.api_key_env=OPENAI_API_KEY")
    assert submit(cfg, tmp_path / "sw", dry_run=True) is None
    for path in (tmp_path / "sw" / "config.yaml", tmp_path / "sw" / "slurm" / "sweep.sbatch"):
        text = path.read_text()
        assert not [v for v in SECRETS.values() if v in text], path
    assert "api_key_env: OPENAI_API_KEY" in (tmp_path / "sw" / "config.yaml").read_text()


def test_a_secret_typed_into_the_setup_lines_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRETS["WANDB_API_KEY"])
    cfg = job_config(slurm_cfg(f"cluster.setup=['export WANDB_API_KEY={SECRETS['WANDB_API_KEY']}']"))
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        render_script(cfg, tmp_path, sys.executable)
    assert not (tmp_path / "slurm").exists()


@pytest.mark.parametrize("env, found", [
    ({"HF_TOKEN": "hf_0123456789"}, ["HF_TOKEN"]),
    ({"HF_TOKEN": "short"}, []),  # too short to tell from ordinary words
    ({"HOME": "/root/lrsweep/x"}, []),  # not a secret name
])
def test_secrets_in(env, found):
    assert secrets_in("cd /root/lrsweep/x; echo hf_0123456789 short", env) == found


def test_render_template_refuses_missing_or_extra_values():
    assert render_template("a {{X}} b", {"X": "1"}) == "a 1 b"
    with pytest.raises(ValueError):
        render_template("a {{X}} {{Y}}", {"X": "1"})
    with pytest.raises(ValueError):
        render_template("a {{X}}", {"X": "1", "Z": "2"})


def test_the_submitted_config_is_the_one_the_job_resumes(tmp_path):
    """The job runs `sweep resume=<dir>`; it must accept the config.yaml submit wrote, unchanged."""
    submit(slurm_cfg("sweep.lrs=[1e-3,3e-3]"), tmp_path / "sw", dry_run=True)
    resumed = to_typed(load_resumed(tmp_path / "sw", []))
    assert check_sweep_folder(tmp_path / "sw", config_yaml(resumed)) is True
    assert resumed.tracker.mode == "offline" and resumed.sweep.ray_address == "auto"
    # a second submit of a different sweep into the same folder is refused, naming what differs
    with pytest.raises(ConfigError, match="sweep.lrs"):
        submit(slurm_cfg("sweep.lrs=[1e-4]"), tmp_path / "sw", dry_run=True)


def test_missing_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="sbatch not found on PATH"):
        sbatch(tmp_path / "x.sbatch")


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs Slurm's sbatch (apt-get install slurm-client)")
def test_a_refused_job_shows_sbatchs_stderr(tmp_path, monkeypatch):
    """The real sbatch refuses a script without #! before it contacts any controller."""
    (tmp_path / "slurm.conf").write_text("ClusterName=x\nSlurmctldHost=localhost\n")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    script = tmp_path / "x.sbatch"
    script.write_text("echo no interpreter line\n")
    with pytest.raises(RuntimeError, match=r"sbatch refused .*x\.sbatch \(exit 1\):\nsbatch: error: This does not"):
        sbatch(script)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)


def test_bad_input_is_refused_before_sbatch(tmp_path):
    proc = run_cli("submit", "cluster=slurm", "sweep.lrs=[]", f"hydra.run.dir={tmp_path}/sw")
    assert proc.returncode == 2 and "sweep.lrs is empty" in proc.stderr
    proc = run_cli("submit", "cluster=slurm", "cluster.nodez=2", f"hydra.run.dir={tmp_path}/sw")
    assert proc.returncode == 2 and "nodez" in proc.stderr
    assert not (tmp_path / "sw").exists()


def write_progress_folder(sweep_dir):
    """A sweep folder mid-run: one trial done, one part-way, one not started."""
    cfg = replace(slurm_cfg("sweep.lrs=[1e-4,1e-3,3e-3]", "sweep.max_steps=8", "sweep.threshold=0.3"), resume=None)
    (sweep_dir).mkdir(parents=True)
    (sweep_dir / "config.yaml").write_text(config_yaml(cfg))
    done, mid = sweep_dir / "trials" / "lr0.001_seed0", sweep_dir / "trials" / "lr0.003_seed0"
    for trial, steps in ((done, 8), (mid, 3)):
        write_json(trial / "config.json", {"name": trial.name, "setting": "s", "lr": float(trial.name[2:7]), "seed": 0,
                                           "max_steps": 8})
        for step in range(steps + 1):
            append_jsonl(trial / "metrics.jsonl", {"step": step, "kind": "train", "train_loss": 1.0})
            if step in (0, 1, 2, 4, 8):
                append_jsonl(trial / "metrics.jsonl",
                             {"step": step, "kind": "eval", "eval_attack_rate": 1.0 / (step + 1)})
    write_json(done / "result.json", {})


def test_status_reads_progress_from_the_run_files(tmp_path):
    write_progress_folder(tmp_path / "sw")
    st = sweep_status(tmp_path / "sw")
    assert st["job"] is None and st["counts"] == {"pending": 1, "training": 1, "evaluating": 0, "done": 1,
                                                  "stopped": 0, "failed": 0}
    by = {t["trial"]: t for t in st["trials"]}
    assert by["lr0.001_seed0"]["state"] == "done" and by["lr0.001_seed0"]["attack_rate"] == pytest.approx(1 / 9)
    assert (by["lr0.003_seed0"]["step"], by["lr0.003_seed0"]["eval_step"]) == (3, 2)
    assert by["lr0.0001_seed0"]["step"] is None
    text = format_status(st)
    assert "no job recorded" in text and "3 trials: 1 pending, 1 training, 1 done" in text
    row = next(line for line in text.splitlines() if line.startswith("lr0.003_seed0"))
    assert row.split() == ["lr0.003_seed0", "training", "3/8", "-", "0.33", "@2", ">2", "(incomplete:", "2/8)"]


def test_status_shows_steps_to_transfer(tmp_path):
    """Issue 27: status showed progress but not steps-to-transfer; now each trial's, as summary.json writes it."""
    write_progress_folder(tmp_path / "sw")
    st = sweep_status(tmp_path / "sw")
    by = {t["trial"]: t["steps_to_transfer"] for t in st["trials"]}
    assert by == {"lr0.001_seed0": "4", "lr0.003_seed0": ">2 (incomplete: 2/8)", "lr0.0001_seed0": "-"}
    lines = format_status(st).splitlines()
    header = next(line for line in lines if line.startswith("trial"))
    assert header.endswith("steps-to-transfer")
    done = next(line for line in lines if line.startswith("lr0.001_seed0"))
    assert done.split()[-1] == "4" and done.index(" 4") == header.index("steps-to-transfer") - 1


def test_status_shows_the_heartbeat_step_between_checkpoints(tmp_path):
    """metrics.jsonl has the step of the last checkpoint; the trainer's heartbeat has the step it is at."""
    write_progress_folder(tmp_path / "sw")
    trial = tmp_path / "sw" / "trials" / "lr0.003_seed0"
    write_json(trial / "heartbeat.json", {"step": 6, "time": time.time() - 3, "phase": "training",
                                          "steps_per_s": 0.5, "max_steps": 8})
    st = sweep_status(tmp_path / "sw")
    mid = next(t for t in st["trials"] if t["trial"] == "lr0.003_seed0")
    assert (mid["step"], mid["steps_per_s"], mid["eval_step"]) == (6, 0.5, 2) and 2 < mid["beat_age_s"] < 60
    row = next(line for line in format_status(st).splitlines() if line.startswith("lr0.003_seed0"))
    assert row.split()[:6] == ["lr0.003_seed0", "training", "6/8", "2", "s/st", "0.33"] and "s ago" in row


def test_status_of_a_recorded_job_without_slurm_here(tmp_path, monkeypatch):
    write_progress_folder(tmp_path / "sw")
    append_jsonl(tmp_path / "sw" / "slurm" / "jobs.jsonl", {"job_id": "4242", "submitted": 0.0})
    monkeypatch.setenv("PATH", str(tmp_path))
    st = sweep_status(tmp_path / "sw")
    assert st["job"]["job_id"] == "4242" and st["job"]["state"] == "UNKNOWN"
    assert "job 4242 UNKNOWN (reason no Slurm commands on PATH here)" in format_status(st)


def test_status_cli(tmp_path):
    write_progress_folder(tmp_path / "sw")
    proc = run_cli("status", str(tmp_path / "sw"), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["counts"]["done"] == 1
    proc = run_cli("status", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "not a sweep folder" in proc.stderr


def test_help():
    for command in ("submit", "status"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0 and "python -m orchestrator status <sweep_dir>" in proc.stdout
