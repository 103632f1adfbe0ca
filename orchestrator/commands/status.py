"""A submitted sweep's state: its Slurm job (squeue, scontrol or sacct) and each trial's progress from its run files.

    python -m orchestrator status <sweep_dir> [--json]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from eval.runfiles import SweepDir, TrialDir, read_jsonl
from orchestrator.console.interrupt import read_interrupted
from orchestrator.schema import ConfigError, SweepConfig


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None


def slurm_state(job_id: str) -> dict[str, str]:
    """The job's state from squeue (queued or running), scontrol (recently ended) or sacct (accounting)."""
    proc = _run(["squeue", "-h", "-j", job_id, "-o", "%T|%r|%M|%N"])
    if proc is not None and proc.returncode == 0 and proc.stdout.strip():
        state, reason, elapsed, nodes = proc.stdout.strip().splitlines()[0].split("|")
        return {"state": state, "reason": reason, "elapsed": elapsed, "nodes": nodes, "source": "squeue"}
    proc = _run(["scontrol", "show", "job", job_id, "-o"])
    if proc is not None and proc.returncode == 0 and "JobState=" in proc.stdout:
        f = dict(re.findall(r"(\w+)=(\S*)", proc.stdout))
        return {"state": f.get("JobState", "?"), "reason": f.get("Reason", ""), "elapsed": f.get("RunTime", ""),
                "nodes": f.get("NodeList", ""), "exit_code": f.get("ExitCode", ""), "source": "scontrol"}
    proc = _run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,Elapsed,NodeList"])
    if proc is not None and proc.returncode == 0 and proc.stdout.strip():
        state, code, elapsed, nodes = proc.stdout.strip().splitlines()[-1].split("|")
        return {"state": state, "exit_code": code, "elapsed": elapsed, "nodes": nodes, "source": "sacct"}
    if proc is None and _run(["squeue", "--version"]) is None:
        return {"state": "UNKNOWN", "reason": "no Slurm commands on PATH here", "source": "none"}
    return {"state": "UNKNOWN", "reason": "not in squeue, scontrol or sacct (ended long ago?)", "source": "none"}


def trial_progress(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every (lr, seed) of the sweep's config.yaml, from its run files: state, latest step (the trainer's
    heartbeat between checkpoints), speed, latest eval attack rate (orchestrator/console/progress_table.py) and
    steps-to-transfer so far, as summary.json and the report write it (a value, or a lower bound and why)."""
    from dataclasses import asdict

    import yaml

    from orchestrator.budget import trial_max_steps
    from orchestrator.console.progress_table import trial_row

    cfg = yaml.safe_load((sweep_dir / "config.yaml").read_text())
    sw = cfg["sweep"]
    threshold = float(sw.get("threshold", SweepConfig.threshold))  # a folder written before the key: its default
    out = []
    for lr in sw["lrs"]:
        for seed in sw["seeds"]:
            trial_dir = SweepDir(sweep_dir).trial(lr, seed).path
            out.append({"lr": lr, "seed": seed} | asdict(trial_row(trial_dir, trial_max_steps(sw, lr)))  # own budget
                       | {"steps_to_transfer": transfer_text(trial_dir, threshold)})
    return out


def transfer_text(trial_dir: Path, threshold: float) -> str:
    """The trial's steps-to-transfer text from its files (eval/analysis.py), "-" before its first checkpoint."""
    from eval.analysis import analyze_trial, steps_text
    from eval.runfiles import read_json

    files = TrialDir(trial_dir)
    config, rows = read_json(files.config), files.rows()
    if config is None or not rows:
        return "-"
    return steps_text(analyze_trial(config, rows, threshold, error=read_json(files.error), finished=files.finished()))


def sweep_status(sweep_dir: Path) -> dict[str, Any]:
    from orchestrator.console.progress_table import STATES

    sweep_dir = sweep_dir.expanduser().resolve()
    if not (sweep_dir / "config.yaml").exists():
        raise ConfigError(f"{sweep_dir} has no config.yaml, so it is not a sweep folder")
    jobs = read_jsonl(sweep_dir / "slurm" / "jobs.jsonl")
    job = {"job_id": jobs[-1]["job_id"], **slurm_state(str(jobs[-1]["job_id"]))} if jobs else None
    trials = trial_progress(sweep_dir)
    counts = {s: sum(t["state"] == s for t in trials) for s in STATES}
    return {"sweep_dir": str(sweep_dir), "job": job, "jobs": [j["job_id"] for j in jobs], "trials": trials,
            "counts": counts, "summary": (sweep_dir / "summary.json").exists(),
            "interrupted": read_interrupted(sweep_dir)}


def format_status(st: dict[str, Any]) -> str:
    from orchestrator.console.progress_table import TrialRow, format_table

    job = st["job"]
    lines = [f"sweep {st['sweep_dir']}"]
    if st.get("interrupted"):  # stopped by Ctrl-C or SIGTERM (orchestrator/console/interrupt.py)
        lines.append(f"interrupted ({st['interrupted']['signal']}): resume with `{st['interrupted']['resume']}`")
    if job is None:
        lines.append("slurm: no job recorded (not submitted with `submit`)")
    else:
        extra = ", ".join(f"{k} {job[k]}" for k in ("reason", "elapsed", "nodes", "exit_code") if job.get(k))
        lines.append(f"slurm: job {job['job_id']} {job['state']}" + (f" ({extra})" if extra else ""))
        if len(st["jobs"]) > 1:
            lines.append(f"       earlier submissions: {', '.join(map(str, st['jobs'][:-1]))}")
    rows = [TrialRow(**{k: v for k, v in t.items() if k not in ("lr", "seed", "steps_to_transfer")})
            for t in st["trials"]]
    title, header, *table = format_table(rows).splitlines()
    lines += [title, f"{header}  steps-to-transfer"]
    lines += [f"{row:<{len(header)}}  {t['steps_to_transfer']}" for row, t in zip(table, st["trials"], strict=True)]
    if st["summary"]:
        lines.append("summary.json written")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    as_json = "--json" in argv
    dirs = [a for a in argv if a != "--json"]
    if len(dirs) != 1 or dirs[0].startswith("-"):
        print("usage: python -m orchestrator status SWEEP_DIR [--json]", file=sys.stderr)
        return 2
    st = sweep_status(Path(dirs[0]))  # not a sweep folder: ConfigError, exit 2 in orchestrator/__main__.py
    print(json.dumps(st, indent=2) if as_json else format_status(st))
    return 0
