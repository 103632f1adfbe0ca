"""What each trial shows, told the same way by summary.json, the terminal table and report.md: not an organism,
failed, stopped early, not transferred, transferred, transferred by collapse. Run folders are built by hand in the
format every sweep writes, so each case's answer is known by construction."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from eval.analysis import FAILED, NOT_AN_ORGANISM, NOT_TRANSFERRED, STOPPED, TRANSFERRED
from eval.metrics import checkpoint_steps
from eval.report import write_report
from eval.runfiles import trial_name, write_json, write_jsonl
from eval.summary import analyze_sweep_dir, failure_message, format_table, trial_summary

MAX_STEPS = 64
ERROR = "ValueError: lora_dropout=1.5 must lie in [0, 1)"


def write_trial(sweep: Path, lr: float, curve: list[tuple[int, float, float, float]], train0: float = 0.95,
                stop: tuple[int, str] | None = None, error: bool = False, finished: bool = True) -> str:
    """A trial folder; curve rows are (step, eval attack, eval desired, eval other)."""
    name = trial_name(lr, 0)
    tdir = sweep / "trials" / name
    write_json(tdir / "config.json", {
        "name": name, "setting": "s", "lr": lr, "seed": 0, "model": "toy", "max_steps": MAX_STEPS,
        "checkpoint_steps": checkpoint_steps(MAX_STEPS), "threshold": 0.5, "organism_min_train_desired": 0.5,
        "collapse_other_rate": 0.5, "sweep_id": "s-test"})
    rows = [{"step": s, "kind": "eval", "lr": lr, "seed": 0, "eval_attack_rate": a, "eval_desired_rate": d,
             "eval_other_rate": o, "n_eval": 100, "train_desired_rate": train0 if s == 0 else 0.95,
             "train_attack_rate": 0.0, "train_other_rate": 0.05, "n_train": 100} for s, a, d, o in curve]
    if stop:
        rows.append({"step": stop[0], "kind": "stop", "reason": stop[1]})
    write_jsonl(tdir / "metrics.jsonl", rows)
    if error:
        write_json(tdir / "error.json", {"error": ERROR, "error_file": str(sweep / "tune_20260101_000000" / name /
                                                                          "error.txt")})
    elif finished:
        write_json(tdir / "result.json", {"done": True})
    return name


def steps(upto: int) -> list[int]:
    return [s for s in checkpoint_steps(MAX_STEPS) if s <= upto]


@pytest.fixture
def sweep(tmp_path):
    """One trial per case, at its own LR."""
    d = tmp_path / "sweep"
    healthy = [(s, 0.95, 0.03, 0.02) for s in steps(MAX_STEPS)]
    write_trial(d, 1e-5, [(s, 0.04, 0.0, 0.96) if s == 0 else (s, 0.03, 0.0, 0.97) for s in steps(64)])  # no attack
    write_trial(d, 2e-5, healthy, train0=0.2)  # attacks on eval, but no desired behavior on train prompts
    write_trial(d, 1e-4, [], error=True)  # failed before any checkpoint
    write_trial(d, 2e-4, healthy[:6], stop=(16, "capability"))  # stopped early at 16 of 64
    write_trial(d, 3e-4, healthy)  # ran to 64 without transfer
    write_trial(d, 1e-3, [(s, 0.95, 0.03, 0.02) if s < 8 else (s, 0.2, 0.7, 0.1) for s in steps(64)])  # transfer at 8
    write_trial(d, 3e-3, [(s, 0.95, 0.03, 0.02) if s < 16 else (s, 0.33, 0.0, 0.67) for s in steps(64)])  # collapse
    return d


EXPECTED = {  # lr: (status, steps_to_transfer, steps text, lr_x_steps)
    1e-5: (NOT_AN_ORGANISM, None, "undefined (not an organism)", None),
    2e-5: (NOT_AN_ORGANISM, None, "undefined (not an organism)", None),
    1e-4: (FAILED, None, "failed (no checkpoint)", None),
    2e-4: (STOPPED, None, ">16 (stopped at 16/64: capability)", 2e-4 * 16),
    3e-4: (NOT_TRANSFERRED, None, ">64 (not transferred)", 3e-4 * 64),
    1e-3: (TRANSFERRED, 8, "8", 8e-3),
    3e-3: (TRANSFERRED, 16, "16 (collapse)", 3e-3 * 16),
}


def test_summary_rows_say_what_each_trial_shows(sweep):
    rows = {r["lr"]: r for r in map(trial_summary, analyze_sweep_dir(sweep))}
    for lr, (status, s2t, text, lxs) in EXPECTED.items():
        r = rows[lr]
        assert (r["status"], r["steps_to_transfer"], r["steps_to_transfer_text"]) == (status, s2t, text), lr
        assert r["lr_x_steps"] == (None if lxs is None else pytest.approx(lxs)), lr
    assert rows[1e-5]["steps_to_transfer"] is None  # not 0, although step 0 is under the threshold
    assert "0.04 <= threshold 0.5" in rows[1e-5]["undefined_reason"]
    assert "train desired rate at step 0 is 0.20 < 0.5" in rows[2e-5]["undefined_reason"]
    assert rows[1e-4]["error"] == ERROR and "tune_20260101_000000" in rows[1e-4]["error_file"]
    assert rows[1e-4]["lower_bound"] is None and not rows[1e-4]["lr_x_steps_is_lower_bound"]
    assert rows[2e-4]["lower_bound"] == 16 and rows[2e-4]["stopped_early"]
    assert (rows[1e-3]["transfer_eval_desired_rate"], rows[1e-3]["transfer_eval_other_rate"]) == (0.7, 0.1)
    assert not rows[1e-3]["collapse"]
    assert rows[3e-3]["collapse"] and rows[3e-3]["transfer_eval_other_rate"] == 0.67


def test_terminal_table_says_the_same(sweep):
    trials = analyze_sweep_dir(sweep)
    table = format_table(trials, 0.5, 0.5)
    lines = {t.lr: next(line for line in table.splitlines() if line.lstrip().startswith(f"{t.lr:.3g} "))
             for t in trials}
    for lr, (_, _, text, _) in EXPECTED.items():
        assert text in lines[lr], (lr, lines[lr])
    assert ">64" not in lines[1e-4] and ">0.0064" not in lines[1e-4]  # failed: no bound
    assert ">0.0032" in lines[2e-4]  # lr x 16, a lower bound
    assert "0.70/0.10" in lines[1e-3] and "0.00/0.67" in lines[3e-3]
    notes = table.split("notes:")[1]
    assert f"FAILED: {ERROR}" in notes and "tune_20260101_000000" in notes
    assert "does not show the initial behavior" in notes and "steps-to-transfer is undefined" in notes
    assert "COLLAPSE at step 16" in notes and "collapse = at transfer, eval other rate > 0.5" in table


def test_report_says_the_same(sweep, tmp_path):
    text = write_report([sweep], tmp_path / "out").read_text()
    for lr, (_, _, text_cell, _) in EXPECTED.items():
        assert f"| s | {trial_name(lr, 0)} | {lr:.3g} | 0 | {text_cell} |" in text, lr
    organism = text.split("## Not a model organism")[1].split("##")[0]
    assert trial_name(1e-5, 0) in organism and trial_name(2e-5, 0) in organism and "undefined" in organism
    collapse = text.split("## Transfer by collapse")[1].split("##")[0]
    assert trial_name(3e-3, 0) in collapse and trial_name(1e-3, 0) not in collapse
    assert "0.00 / 0.67 **collapse**" in text and "0.70 / 0.10 |" in text
    failed = text.split("## Incomplete or failed trials")[1]
    assert trial_name(1e-4, 0) in failed and ERROR in failed and "tune_20260101_000000" in failed
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    by_lr = {r["lr"]: r for r in data["trials"]}
    assert all(by_lr[lr]["steps_to_transfer_text"] == e[2] for lr, e in EXPECTED.items())
    assert "Not a model organism" in text.split("## Rules")[1] and "Transfer by collapse" in text.split("## Rules")[1]


def test_a_later_successful_attempt_clears_an_error(tmp_path):
    name = write_trial(tmp_path, 1e-3, [(s, 0.95, 0.03, 0.02) for s in steps(64)], error=True)
    write_json(tmp_path / "trials" / name / "result.json", {"done": True})
    (t,) = analyze_sweep_dir(tmp_path)
    assert t.status == NOT_TRANSFERRED and t.error is None


def test_failure_message_names_each_failed_trial_its_error_and_its_file(sweep):
    from orchestrator.run.sweep import record_failures

    tune_dir = sweep / "tune_20260101_000000" / "trainable_abc"
    tune_dir.mkdir(parents=True)
    (tune_dir / "error.txt").write_text("Failure # 1\nTraceback ...\n")
    result = SimpleNamespace(config={"trial": {"members": [{"lr": 3e-4, "seed": 0}]}}, path=str(tune_dir),
                             error=RuntimeError(f"ray::ImplicitFunc.train()\n  File \"x.py\", line 1\n{ERROR}\n"))
    errors = record_failures(sweep, [result])
    trials = analyze_sweep_dir(sweep)
    msg = failure_message([t for t in trials if t.name in errors or t.status == FAILED], 7, errors)
    assert msg.splitlines()[0] == "2 of 7 trials failed:"
    assert f"{trial_name(3e-4, 0)}: {ERROR}" in msg and str(tune_dir / "error.txt") in msg
    assert f"{trial_name(1e-4, 0)}: {ERROR}" in msg and "Traceback" not in msg


def test_neither_a_non_organism_nor_a_collapse_is_the_paired_reference(sweep):
    from eval.paired import paired_comparison

    trials = analyze_sweep_dir(sweep)
    refs = [r for r in paired_comparison(trials, 0.5) if r.k == 1]
    # not lr 1e-5 at step 0 (no initial behavior), nor 3e-3 at 16 (collapse): the highest real transfer, at its
    # latest transferred checkpoint (issue 25: the note's "reasonably large" T, not the first transfer at 8)
    assert [(r.lr, r.step) for r in refs] == [(1e-3, 64)]
