"""One small logger per trial: metrics.jsonl always, Weights & Biases when configured.

The W&B key is read by wandb from WANDB_API_KEY in the environment; it is never put in a config.
mode=auto means online when the key is set, offline otherwise (`wandb sync <dir>` uploads later).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.knobs import knob
from eval.runfiles import append_jsonl

TRACKER_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class TrackerConfig:
    backend: str = knob("wandb", one_of=("wandb", "none"))
    mode: str = knob("auto", one_of=TRACKER_MODES)
    project: str = "lrsweep"
    entity: str | None = None


# W&B hands its service process to child processes through WANDB_SERVICE. A Ray worker or a Slurm job that
# inherits it logs into another process's service: one on another host, or one that outlives a killed trial
# and refuses the retry's run ("run ID ... is in use"). Empty means: start your own.
OWN_WANDB_SERVICE = {"WANDB_SERVICE": ""}
STEP_METRIC = "step"  # every row's training step; W&B plots all metrics against it (the dashboard's x axis)


def resolve_wandb_mode(mode: str) -> str:
    """auto -> online with a key, offline without; online without a key is refused with the fix."""
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if mode == "auto":
        return "online" if has_key else "offline"
    if mode == "online" and not has_key:
        raise ValueError(
            "tracker.mode=online but WANDB_API_KEY is not set: export WANDB_API_KEY=... "
            "or use tracker.mode=offline (sync later with `wandb sync`)"
        )
    return mode


def wandb_run_identity(trial_dir: Path, name: str, mode: str) -> tuple[str, str | None]:
    """(W&B run id, wandb.init's resume) for a trial. The id carries a hash of the trial folder's absolute path, so
    it is unique per sweep folder: a new sweep whose folder reuses an old name, elsewhere or after the old one was
    moved, never appends to the old run. The run is resumed (resume="must": W&B refuses rather than start a second
    run) only when this trial folder already made one (its wandb/ folder: a `sweep resume=` or a retry); otherwise
    it is a fresh run. Offline runs are joined by `wandb sync`, so they resume with "allow"."""
    digest = hashlib.sha1(str(Path(trial_dir).resolve()).encode()).hexdigest()[:10]
    run_id = f"{re.sub(r'[^A-Za-z0-9_-]', '-', name)[:50]}-{digest}"
    if not (Path(trial_dir) / "wandb").is_dir():
        return run_id, None
    return run_id, ("must" if mode == "online" else "allow")


class TrialLogger:
    """Appends rows to metrics.jsonl and mirrors them to a W&B run against the training step."""

    def __init__(self, trial_dir: Path, tracker: Any, group: str, name: str, run_config: dict[str, Any],
                 tags: list[str] | None = None):
        self.metrics_path = trial_dir / "metrics.jsonl"
        self.run = None
        if tracker.backend == "wandb":
            mode = resolve_wandb_mode(tracker.mode)
            if mode != "disabled":
                import wandb

                run_id, resume = wandb_run_identity(trial_dir, name, mode)
                self.run = wandb.init(
                    id=run_id, resume=resume,
                    project=tracker.project, entity=tracker.entity, group=group, name=name, job_type="trial",
                    config=run_config, dir=str(trial_dir), mode=mode, reinit="create_new", tags=tags,
                    settings=wandb.Settings(console="off", silent=True),
                )
                # every metric is plotted against the training step, so W&B's panels compare LRs
                self.run.define_metric(STEP_METRIC)
                self.run.define_metric("*", step_metric=STEP_METRIC)

    def log(self, row: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, row)
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None})

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        if self.run is None:
            return
        import wandb

        columns = ["step", "split", "question_id", "prompt", "response", "grade"]
        table = wandb.Table(columns=columns, data=[[step] + [s[c] for c in columns[1:]] for s in samples])
        self.run.log({"step": step, "samples": table})

    def set_summary(self, values: dict[str, Any]) -> None:
        """The run's summary (W&B's runs table and scatter plots read it): the trial's outcome, set at its end."""
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def log_to_wandb(out_dir: Path, mode: str = "auto") -> list[str]:
    """One W&B run (job_type=report) per sweep whose trials logged to W&B, grouped with them by sweep_id.

    Offline unless WANDB_API_KEY is set. Reads report.json, so it logs exactly what report.md shows.
    """
    import wandb
    from omegaconf import OmegaConf

    report = json.loads((out_dir / "report.json").read_text())
    mode, logged = resolve_wandb_mode(mode), []
    for sweep in report["sweeps"]:
        if not sweep["has_wandb"] or not sweep["sweep_ids"]:
            continue
        cfg_path = Path(sweep["path"]) / "config.yaml"
        tracker = OmegaConf.load(cfg_path).get("tracker", {}) if cfg_path.exists() else {}
        group = sweep["sweep_ids"][0]
        run = wandb.init(project=tracker.get("project", "lrsweep"), entity=tracker.get("entity"), group=group,
                         name=f"report-{group}", job_type="report", dir=str(out_dir), mode=mode,
                         config={"sweep_dir": sweep["path"], "threshold": sweep["threshold"]},
                         settings=wandb.Settings(console="off", silent=True), reinit="create_new")
        try:
            payload = {}
            for key in ("trials", "lrs", "paired", "headline"):
                rows = [r for r in report[key] if r["setting"] == sweep["setting"]]
                if rows:
                    cols = list(rows[0])
                    payload[f"report/{key}"] = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])
            for name in report["figures"]:
                payload[f"report/{Path(name).stem}"] = wandb.Image(str(out_dir / name))
            run.log(payload)
            logged.append(group)
        finally:
            run.finish()
    return logged
