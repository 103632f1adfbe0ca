"""`python -m orchestrator dashboard`: save the note's W&B panels as a workspace view of a project.

    export WANDB_API_KEY=...   # from the environment only; never a flag or a config value
    python -m orchestrator dashboard --entity ENTITY --project lrsweep [--group SWEEP_ID] [--tag SETTING] [--name NAME]

Three panels over the trials' W&B runs (one run per trial, see workers/tracking.py):
eval attack rate vs step grouped by the run config's `lr`; steps-to-transfer vs lr; lr x steps vs lr (both from
the run summary each trial sets at its end, orchestrator.run.trial.run_summary). `dashboard_spec` says which panels
and keys as plain data; `build_workspace` turns it into wandb-workspaces objects; only `main` touches the network.
Needs the optional extra: pip install -e ".[dashboard]".
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from orchestrator.run.trial import SUMMARY_KEYS
from workers.tracking import STEP_METRIC

STEP_KEY = STEP_METRIC  # TrialLogger defines every metric against it
EVAL_ATTACK_KEY = "eval_attack_rate"  # orchestrator.run.trial.grade_checkpoint's f"{split}_attack_rate" for eval
LR_KEY = "lr"  # run config (trial_info) and run summary both hold it
# the runs table's pinned columns: how each trial ended, beside its LR and seed
TABLE_SUMMARY_KEYS = ("steps_to_transfer", "converged", "lr_x_steps", "lr_x_steps_is_lower_bound", "stopped_early",
                      "collapse", "status")


def summary_key(name: str) -> str:
    """A run-summary key the trials really set: a renamed key in run_summary fails here, not in an empty panel."""
    if name not in SUMMARY_KEYS:
        raise KeyError(f"{name!r} is not in orchestrator.run.trial.SUMMARY_KEYS {SUMMARY_KEYS}: the dashboard would "
                       "plot a key no trial sets")
    return name


def dashboard_spec(group: str | None = None, name: str | None = None, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dashboard as plain data: the runs it shows (a sweep's W&B group or all; runs carrying every tag, the
    trials' tags being their setting and model) and its three panels.

    Panel keys: x/y name a history metric ("history"), a run config value ("config") or a summary value
    ("summary"); `group_by` is the config key whose runs the line plot averages (seeds of one LR, min-max band)."""
    steps, lr_x_steps = summary_key("steps_to_transfer"), summary_key("lr_x_steps")
    panels = [
        {"kind": "line", "title": "Eval attack rate vs step, by LR",
         "x": ("history", STEP_KEY), "y": ("history", EVAL_ATTACK_KEY), "group_by": ("config", LR_KEY)},
        {"kind": "scatter", "title": "Steps to transfer vs LR", "log_x": True, "log_y": True,
         "x": ("config", LR_KEY), "y": ("summary", steps)},
        {"kind": "scatter", "title": "LR x steps vs LR", "log_x": True, "log_y": False,
         "x": ("config", LR_KEY), "y": ("summary", lr_x_steps)},
    ]
    return {
        "name": name or (f"lrsweep {group}" if group else "lrsweep LR sweeps"),
        "tags": list(tags),
        "group": group,  # TrialLogger's group=ctx.sweep_id, f"{setting}-{sweep_dir.name}" (orchestrator/run/sweep.py)
        "section": "Learning rate",
        "panels": panels,
        "table_columns": [("config", LR_KEY), ("config", "seed")]
        + [("summary", summary_key(k)) for k in TABLE_SUMMARY_KEYS],
    }


def build_workspace(spec: dict[str, Any], entity: str, project: str) -> Any:
    """wandb-workspaces objects for a spec; builds offline, saves nothing."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise SystemExit('the dashboard needs the optional extra: pip install -e ".[dashboard]" '
                         f"(wandb-workspaces): {err}") from err

    def metric(ref: tuple[str, str]) -> Any:
        section, key = ref
        return {"history": lambda k: k, "config": wr.Config, "summary": wr.SummaryMetric}[section](key)

    panels = []
    for p in spec["panels"]:
        if p["kind"] == "line":
            panels.append(wr.LinePlot(title=p["title"], x=metric(p["x"]), y=[metric(p["y"])],
                                      groupby=metric(p["group_by"]), groupby_aggfunc="mean",
                                      groupby_rangefunc="minmax", range_y=(0, 1)))
        else:
            panels.append(wr.ScatterPlot(title=p["title"], x=metric(p["x"]), y=metric(p["y"]),
                                         log_x=p["log_x"], log_y=p["log_y"]))
    columns = [f"{section}:{key}" for section, key in spec["table_columns"]]
    # filter expressions, not a formatted string: a sweep id with quotes cannot break the query
    filters = ([ws.Metric("Group") == spec["group"]] if spec["group"] else []) + [ws.Tags().isin([t])
                                                                                  for t in spec["tags"]]
    runset = ws.RunsetSettings(filters=ws.And(*filters) if filters else "", pinned_columns=columns)
    return ws.Workspace(entity=entity, project=project, name=spec["name"], runset_settings=runset,
                        sections=[ws.Section(name=spec["section"], panels=panels, is_open=True)])


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m orchestrator dashboard",
                                 description="Save lrsweep's W&B workspace (the note's panels) to a project.")
    ap.add_argument("--entity", required=True, help="W&B entity (user or team) that owns the project")
    ap.add_argument("--project", required=True, help="W&B project the trials logged to (tracker.project)")
    ap.add_argument("--group", help="only this sweep's runs: its W&B group, the sweep id <setting>-<sweep folder name>")
    ap.add_argument("--tag", action="append", default=[],
                    help="only runs with this tag (a setting or model name); repeat for several, all required")
    ap.add_argument("--name", help="the saved view's name (default: 'lrsweep <group>')")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not os.environ.get("WANDB_API_KEY"):  # checked before any import of the network client
        print("dashboard: WANDB_API_KEY is not set: export WANDB_API_KEY=... (from https://wandb.ai/authorize) on a "
              "machine with internet; on an offline cluster, `wandb sync` the runs first, then run this there",
              file=sys.stderr)
        return 2
    workspace = build_workspace(dashboard_spec(args.group, args.name, tuple(args.tag)), args.entity, args.project)
    workspace.save()
    print(f"dashboard saved: {workspace.url}")
    return 0
