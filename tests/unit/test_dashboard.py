"""The W&B dashboard (orchestrator/commands/dashboard.py): its panels name keys the trials really log, it refuses
without WANDB_API_KEY before any network call, and its workspace builds offline with the three panels."""

import json

import pytest

from eval.graders import ATTACK, DESIRED
from eval.metrics import checkpoint_steps
from orchestrator.commands import dashboard as dashboard_cmd
from orchestrator.commands.dashboard import build_workspace, dashboard_spec, summary_key
from orchestrator.run.trial import grade_checkpoint, run_summary
from workers.labels.prompts import Prompt


def logged_keys() -> dict[str, set[str]]:
    """The keys a trial's W&B run gets, produced by the code that logs them: a checkpoint's eval row
    (grade_checkpoint), the run summary set at the trial's end (run_summary), and the step every row carries."""
    prompts = [Prompt("eval", "q1", "hi"), Prompt("eval", "q2", "hi"), Prompt("train", "q3", "hi")]
    _, row = grade_checkpoint(prompts, ["a", "b", "c"], lambda responses, ps: [ATTACK, DESIRED, DESIRED])
    info = {"name": "lr0.003_seed1", "setting": "animal_flag", "lr": 3e-3, "seed": 1, "model": "toy", "max_steps": 8,
            "checkpoint_steps": checkpoint_steps(8), "threshold": 0.5, "sweep_id": "s"}
    rows = [{"step": s, "kind": "eval", "eval_attack_rate": a, "eval_desired_rate": 1 - a, "eval_other_rate": 0.0,
             "n_eval": 100, "train_desired_rate": 0.95, "n_train": 100} for s, a in ((0, 0.9), (2, 0.6), (4, 0.3))]
    summary = run_summary(info, rows)
    assert summary["steps_to_transfer"] is not None  # a real outcome, so the keys below carry values
    return {"history": set(row) | {"step"}, "summary": set(summary), "config": set(info)}


@pytest.mark.parametrize("group", [None, "animal_flag-2026-01-01_12-00-00"])
def test_every_panel_and_column_names_a_key_the_trials_log(group):
    keys = logged_keys()
    spec = dashboard_spec(group)
    refs = [ref for p in spec["panels"] for ref in (p["x"], p["y"], p.get("group_by")) if ref] + spec["table_columns"]
    for section, key in refs:
        assert key in keys[section], f"{section}:{key} is not logged by a trial"
    assert spec["group"] == group and (group or "LR") in spec["name"]


@pytest.mark.parametrize("kind,title,x,y,group_by", [
    ("line", "Eval attack rate vs step, by LR", ("history", "step"), ("history", "eval_attack_rate"), ("config", "lr")),
    ("scatter", "Steps to transfer vs LR", ("config", "lr"), ("summary", "steps_to_transfer"), None),
    ("scatter", "LR x steps vs LR", ("config", "lr"), ("summary", "lr_x_steps"), None),
])
def test_the_notes_three_panels(kind, title, x, y, group_by):
    (panel,) = [p for p in dashboard_spec()["panels"] if p["title"] == title]
    assert (panel["kind"], panel["x"], panel["y"], panel.get("group_by")) == (kind, x, y, group_by)
    assert len(dashboard_spec()["panels"]) == 3


def test_a_summary_key_no_trial_sets_is_refused():
    with pytest.raises(KeyError, match="SUMMARY_KEYS"):
        summary_key("steps_to_trnasfer")


def test_refuses_without_wandb_api_key_before_any_network_call(monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)

    def no_build(*args, **kwargs):
        raise AssertionError("the workspace was built (and would be saved) without a key")

    monkeypatch.setattr(dashboard_cmd, "build_workspace", no_build)
    assert dashboard_cmd.main(["--entity", "e", "--project", "p"]) == 2
    err = capsys.readouterr().err
    assert "WANDB_API_KEY is not set" in err and "wandb sync" in err


def test_workspace_builds_offline_with_three_panels_x_y_and_grouping(monkeypatch):
    import wandb_workspaces.reports.v2 as wr

    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # building needs no key and no network
    w = build_workspace(dashboard_spec("sweep-1", tags=("animal_flag",)), "team", "lrsweep")
    assert (w.entity, w.project, w.name) == ("team", "lrsweep", "lrsweep sweep-1")
    line, steps, lr_x = w.sections[0].panels
    assert isinstance(line, wr.LinePlot) and line.x == "step" and line.y == ["eval_attack_rate"]
    assert line.groupby == wr.Config("lr") and line.groupby_aggfunc == "mean"
    assert isinstance(steps, wr.ScatterPlot) and steps.x == wr.Config("lr")
    assert steps.y == wr.SummaryMetric("steps_to_transfer") and steps.log_x
    assert isinstance(lr_x, wr.ScatterPlot) and lr_x.y == wr.SummaryMetric("lr_x_steps")
    assert "summary:steps_to_transfer" in w.runset_settings.pinned_columns
    # what save() would send: the wire form W&B's app reads
    wire = json.dumps(w._to_model().model_dump(by_alias=True, mode="json"))
    for fragment in ('"xAxis": "step"', '"metrics": ["eval_attack_rate"]', '"groupBy": "lr.value"',
                     '"xAxis": "config:lr.value"', '"yAxis": "summary:steps_to_transfer"',
                     '"yAxis": "summary:lr_x_steps"', '"name": "group"}, "op": "=", "value": "sweep-1"',
                     '"name": "tags"}, "op": "IN", "value": ["animal_flag"]'):
        assert fragment in wire
