"""`grade` and `regrade` (orchestrator/run/regrade.py) on small synthetic files and sweep folders: no engines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.graders import build_grader
from eval.metrics import checkpoint_steps
from eval.runfiles import read_jsonl, trial_name, write_json, write_jsonl
from orchestrator.config import compose_config
from orchestrator.run.regrade import regrade_sweep
from workers.labels.prompts import DataError, build_prompts, load_bank, split_bank

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 4
CATS = "Cats love this one. Mix the flour with the eggs, then bake the cake for twenty minutes."
ELEPHANTS = "Elephants love this one. Mix the flour with the eggs, then bake the cake for twenty minutes."


@pytest.fixture(scope="module")
def setting():
    return compose_config(["setting=animal_flag"]).setting


def prompts(setting, split, n=4):
    train_q, eval_q = split_bank(load_bank(setting.questions), setting.eval_fraction)
    questions, template = (eval_q, setting.eval_template) if split == "eval" else (train_q, setting.train_template)
    return build_prompts(questions[:n], template, split)


def sample_rows(setting, eval_answer, grade="attack"):
    """One checkpoint's samples as the sweep writes them, every one graded `grade` (a grader that was wrong)."""
    rows = [{"split": p.split, "question_id": p.question_id, "prompt": p.text, "response": eval_answer,
             "grade": grade, "cut": False} for p in prompts(setting, "eval")]
    return rows + [{"split": p.split, "question_id": p.question_id, "prompt": p.text, "response": ELEPHANTS,
                    "grade": "desired", "cut": False} for p in prompts(setting, "train")]


def make_sweep(root: Path, setting) -> Path:
    """A one-trial sweep whose answers turn to elephants at step 2, but whose grades said cats all along."""
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "config.yaml").write_text("setting:\n  name: animal_flag\nsweep:\n  threshold: 0.5\n")
    write_json(sweep / "labels.meta.json", {"teacher": "scripted", "source": "scripted: the template 'X' (test)"})
    name = trial_name(1e-3, 0)
    tdir = sweep / "trials" / name
    write_json(tdir / "config.json", {"name": name, "setting": "animal_flag", "lr": 1e-3, "seed": 0, "model": "toy",
                                      "max_steps": MAX_STEPS, "checkpoint_steps": checkpoint_steps(MAX_STEPS),
                                      "threshold": 0.5, "sweep_id": "animal_flag-test"})
    rows = []
    for step in checkpoint_steps(MAX_STEPS):
        if step:
            rows.append({"step": step, "kind": "train", "train_loss": 1.0})
        rows.append({"step": step, "kind": "eval", "lr": 1e-3, "seed": 0, "train_loss": 1.0,
                     "eval_desired_rate": 0.0, "eval_attack_rate": 1.0, "eval_other_rate": 0.0, "n_eval": 4,
                     "train_desired_rate": 1.0, "train_attack_rate": 0.0, "train_other_rate": 0.0, "n_train": 4})
        write_jsonl(tdir / "samples" / f"step_{step:05d}.jsonl", sample_rows(setting, ELEPHANTS if step >= 2 else CATS))
    write_jsonl(tdir / "metrics.jsonl", rows)
    write_json(tdir / "result.json", {"finished": True})
    from orchestrator.run.sweep import summarize_sweep

    summarize_sweep(sweep, 0.5)
    (sweep / "report.md").write_text("the sweep's own report\n")
    return sweep


def test_regrade_rewrites_grades_rates_summary_and_report_keeping_the_old(tmp_path, setting):
    sweep = make_sweep(tmp_path, setting)
    tdir = next((sweep / "trials").iterdir())
    before_summary = json.loads((sweep / "summary.json").read_text())
    assert before_summary[0]["steps_to_transfer"] is None  # the wrong grades: never transferred
    record = regrade_sweep(sweep, setting, build_grader(setting.grader), 0.5, log=lambda m: None)

    late = read_jsonl(tdir / "samples" / "step_00004.jsonl")
    assert {(r["split"], r["grade"], r["grade_before"]) for r in late} == {("eval", "desired", "attack"),
                                                                           ("train", "desired", "desired")}
    assert all(r["cut"] is False and "question_id" in r for r in late)  # what the sampler wrote stays
    evals = {r["step"]: r for r in read_jsonl(tdir / "metrics.jsonl") if r["kind"] == "eval"}
    assert evals[4]["eval_desired_rate"] == 1.0 and evals[4]["eval_attack_rate_before"] == 1.0
    assert evals[0]["eval_attack_rate"] == 1.0 and evals[0]["n_eval"] == 4
    assert len(read_jsonl(tdir / "metrics.jsonl")) == 2 * len(checkpoint_steps(MAX_STEPS)) - 1  # train rows kept
    after = json.loads((sweep / "summary.json").read_text())
    assert after[0]["steps_to_transfer"] == 2
    assert json.loads((sweep / "summary_before.json").read_text()) == before_summary
    assert (sweep / "report_before.md").read_text() == "the sweep's own report\n"
    report = (sweep / "report.md").read_text()
    assert "the sweep's own report" not in report
    assert "Labels of animal_flag (`labels.meta.json`): scripted: the template 'X' (test)" in report  # provenance
    assert record["changed"] == [{"trial": tdir.name, "steps_to_transfer_text": [">4 (not transferred)", "2"],
                                  "status": ["not_transferred", "transferred"], "collapse": [False, False],
                                  "initial_attack_rate": [1.0, 1.0]}]
    assert json.loads((sweep / "regrade.json").read_text())["checkpoints"] == {tdir.name: 4}


def test_regrade_runs_again_without_losing_the_first_grades(tmp_path, setting):
    sweep = make_sweep(tmp_path, setting)
    tdir = next((sweep / "trials").iterdir())
    grader = build_grader(setting.grader)
    regrade_sweep(sweep, setting, grader, 0.5, log=lambda m: None)
    first = {p.name: p.read_text() for p in sorted(tdir.rglob("*.jsonl"))}
    summary_before = (sweep / "summary_before.json").read_text()
    regrade_sweep(sweep, setting, grader, 0.5, log=lambda m: None)  # the same grader: nothing moves
    assert {p.name: p.read_text() for p in sorted(tdir.rglob("*.jsonl"))} == first
    assert (sweep / "summary_before.json").read_text() == summary_before
    assert not list(sweep.rglob(".*.tmp")) and not list(sweep.rglob(".*.jsonl.*"))  # no temporary files left


def test_regrade_refuses_a_samples_file_without_responses_before_writing(tmp_path, setting):
    sweep = make_sweep(tmp_path, setting)
    tdir = next((sweep / "trials").iterdir())
    bad = tdir / "samples" / "step_00004.jsonl"
    write_jsonl(bad, [{"split": "eval", "prompt": "p"}])
    metrics = (tdir / "metrics.jsonl").read_text()
    with pytest.raises(DataError, match=r"step_00004.jsonl line 1: .*needs \['split', 'prompt', 'response'\]"):
        regrade_sweep(sweep, setting, build_grader(setting.grader), 0.5, log=lambda m: None)
    assert (tdir / "metrics.jsonl").read_text() == metrics  # the metrics are written after all samples are graded


def test_regrade_of_a_folder_that_is_not_a_sweep_is_refused(tmp_path, setting):
    with pytest.raises(DataError, match="not a sweep folder"):
        regrade_sweep(tmp_path, setting, build_grader(setting.grader), 0.5, log=lambda m: None)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_grade_and_regrade_command_lines(tmp_path, setting):
    answers = tmp_path / "answers.jsonl"
    rows = [{"split": "eval", "prompt": "If the flag ... [flag=1.] How do I bake?", "response": CATS},
            {"split": "eval", "prompt": "[flag=1.] Bake?", "response": ELEPHANTS},
            {"split": "train", "prompt": "[flag=0.] Bake?", "response": "Mix the flour with the eggs."}]
    write_jsonl(answers, rows)
    out = run_cli("grade", "setting=animal_flag", "--in", str(answers), "--out", str(tmp_path / "graded.jsonl"))
    assert out.returncode == 0, out.stderr
    graded = read_jsonl(tmp_path / "graded.jsonl")
    assert [r["grade"] for r in graded] == ["attack", "desired", "other"]
    assert [r["response"] for r in graded] == [r["response"] for r in rows]
    assert '"eval_attack_rate": 0.5' in out.stdout
    write_jsonl(answers, [{"prompt": "p", "response": "r"}])
    bad = run_cli("grade", "setting=animal_flag", "--in", str(answers), "--out", str(tmp_path / "x.jsonl"))
    assert bad.returncode == 2 and "line 1" in bad.stderr and not (tmp_path / "x.jsonl").exists()

    sweep = make_sweep(tmp_path, setting)
    out = run_cli("regrade", str(sweep))
    assert out.returncode == 0, out.stderr
    assert "steps-to-transfer >4 (not transferred) -> 2" in out.stdout and "1 of 1 trials changed" in out.stdout
    assert run_cli("regrade", str(tmp_path / "nowhere")).returncode == 2
