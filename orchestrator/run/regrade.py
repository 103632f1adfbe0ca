"""Grade answer files again, without sampling: any file of {split, prompt, response} rows, or a whole sweep folder.

Both go through the one per-checkpoint grading call of the sampler path (orchestrator.run.trial.grade_checkpoint), so a
regrade gives exactly what a sweep run with today's grader would have written. The first grade a row or a rate had
is kept beside the new one (`grade_before` in a sample, `<field>_before` in a metrics row, summary_before.json,
report_before.md), written once: a regrade can be run again (another grader, a crash half-way) and nothing that
the sweep wrote is lost. Every file is replaced atomically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.runfiles import SweepDir, TrialDir, read_jsonl, step_of, write_json, write_jsonl
from orchestrator.run.trial import grade_checkpoint
from workers.labels.prompts import DataError, Prompt, build_prompts, load_bank, split_bank

REQUIRED = ("split", "prompt", "response")
KEPT_AS_IS = {"split", "question_id", "prompt", "response", "cut"}  # what the sampler wrote, never regraded


def check_rows(rows: list[dict[str, Any]], where: str) -> None:
    """Each row needs split (eval or train), prompt and response; the first bad one is named with its line."""
    for i, row in enumerate(rows, 1):
        missing = [k for k in REQUIRED if not isinstance(row.get(k), str)]
        if missing or row["split"] not in ("eval", "train"):
            raise DataError(f"{where} line {i}: a row to grade needs {list(REQUIRED)} as strings with split 'eval' "
                            f"or 'train'; this one has {sorted(row)} (split {row.get('split')!r})")


def bank_prompts(setting: Any) -> tuple[dict[str, dict], dict[tuple[str, str], Prompt]]:
    """(bank rows by question id, the setting's rendered prompts by (split, text)): how a row finds its question."""
    bank = load_bank(setting.questions)
    train_q, eval_q = split_bank(bank, setting.eval_fraction)
    rendered = build_prompts(eval_q, setting.eval_template, "eval") + build_prompts(
        train_q, setting.train_template, "train")
    return {str(q["id"]): q for q in bank}, {(p.split, p.text): p for p in rendered}


def prompt_of(row: dict[str, Any], by_id: dict[str, dict], by_text: dict[tuple[str, str], Prompt]) -> Prompt:
    """The Prompt a row was sampled from: its question's bank row (graders such as the code grader read it), found
    by question_id or by the rendered text; a prompt from elsewhere keeps its own text as the question."""
    qid = str(row.get("question_id", ""))
    found = by_text.get((row["split"], row["prompt"]))
    bank_row = by_id.get(qid) or (found.row if found else {"id": qid, "question": row["prompt"]})
    return Prompt(split=row["split"], question_id=qid or str(bank_row["id"]), text=row["prompt"], row=bank_row)


def keep_before(new: dict[str, Any], old: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """`new` with `old`'s value of each of `fields` kept as `<field>_before` unless one is kept already (the first
    regrade's stays); null when `old` had no such field (the grading call added it)."""
    out = dict(new)
    for f in fields:
        if f"{f}_before" not in old:
            out[f"{f}_before"] = old.get(f)
    return out


def grade_rows(rows: list[dict[str, Any]], setting: Any, grader: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows with the new grade and whatever else the grading call adds, the rates row of grade_checkpoint)."""
    by_id, by_text = bank_prompts(setting)
    prompts = [prompt_of(r, by_id, by_text) for r in rows]
    cut = [bool(r["cut"]) for r in rows] if rows and all("cut" in r for r in rows) else None
    samples, rates = grade_checkpoint(prompts, [r["response"] for r in rows], grader, cut)
    graded = []
    for old, sample in zip(rows, samples, strict=True):
        fresh = {k: v for k, v in sample.items() if k not in KEPT_AS_IS}
        graded.append(keep_before({**old, **fresh}, old, list(fresh)))
    return graded, rates


def regrade_metrics(rows: list[dict[str, Any]], by_step: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """metrics.jsonl rows with each regraded checkpoint's eval rows given the new rates (the old ones kept)."""
    out = []
    for row in rows:
        new = by_step.get(row.get("step")) if row.get("kind") == "eval" else None
        out.append(row if new is None else keep_before({**row, **new}, row, list(new)))
    return out


def regrade_trial(trial_dir: Path, setting: Any, grader: Any) -> int:
    """Regrade every samples file of a trial and its metrics rows; returns the number of checkpoints regraded."""
    by_step: dict[int, dict[str, Any]] = {}
    files = TrialDir(trial_dir)
    for path in sorted(files.samples_dir.glob("step_*.jsonl")):
        rows = read_jsonl(path)
        check_rows(rows, str(path))
        graded, rates = grade_rows(rows, setting, grader)
        write_jsonl(path, graded)  # first: a crash before the metrics are written is repaired by running it again
        by_step[step_of(path)] = rates
    metrics = files.metrics
    if by_step and metrics.exists():
        write_jsonl(metrics, regrade_metrics(read_jsonl(metrics), by_step))
    return len(by_step)


def keep_first_copy(path: Path, before: Path) -> None:
    """Copy `path` to `before` unless that copy exists already (it then holds what the sweep itself wrote)."""
    if path.exists() and not before.exists():
        tmp = before.with_name(f".{before.name}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(before)


def changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials whose steps-to-transfer, status or collapse flag differ between two summary.json lists."""
    old = {t["trial"]: t for t in before}
    keys = ("steps_to_transfer_text", "status", "collapse", "initial_attack_rate")
    return [{"trial": t["trial"], **{k: [old[t["trial"]].get(k), t.get(k)] for k in keys}}
            for t in after if t["trial"] in old and any(old[t["trial"]].get(k) != t.get(k) for k in keys[:3])]


def regrade_sweep(sweep_dir: Path, setting: Any, grader: Any, threshold: float,
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Regrade a sweep folder in place: samples, metrics, summary.json, curves, report.md; returns regrade.json."""
    from eval.report import write_report
    from orchestrator.run.sweep import summarize_sweep

    trial_dirs = [t.path for t in SweepDir(sweep_dir).trials()]
    if not trial_dirs:
        raise DataError(f"{sweep_dir} is not a sweep folder: no trials/*/config.json in it")
    keep_first_copy(sweep_dir / "summary.json", sweep_dir / "summary_before.json")
    keep_first_copy(sweep_dir / "report.md", sweep_dir / "report_before.md")
    counts = {d.name: regrade_trial(d, setting, grader) for d in trial_dirs}
    log(f"[regrade] {sum(counts.values())} checkpoints of {len(trial_dirs)} trials regraded with the "
        f"{setting.grader.kind} grader of setting {setting.name!r}")
    trials = summarize_sweep(sweep_dir, threshold, f"{setting.name} (regraded)")
    write_report([sweep_dir], sweep_dir)
    before, after = (json.loads(p.read_text(encoding="utf-8")) if p.exists() else []
                     for p in (sweep_dir / "summary_before.json", sweep_dir / "summary.json"))
    record = {"setting": setting.name, "grader": setting.grader.kind, "checkpoints": counts,
              "trials": len(trials), "changed": changes(before, after)}
    write_json(sweep_dir / "regrade.json", record)
    return record
