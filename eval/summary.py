"""summary.json rows and the terminal table, both rendered from eval.analysis.TrialAnalysis (as report.md is), so
the three outputs cannot disagree about what a trial shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.analysis import (
    COLLAPSE_COHERENT_DROP,
    COLLAPSE_OTHER_RISE,
    FAILED,
    NOT_AN_ORGANISM,
    TrialAnalysis,
    analyze_trial,
    cut_warning,
    lr_x_steps_text,
    steps_text,
)
from eval.runfiles import load_trial_records


def analyze_sweep_dir(sweep_dir: Path, threshold: float | None = None, z: float = 1.96,
                      setting: str | None = None) -> list[TrialAnalysis]:
    """Every trial of a sweep folder, from its files alone. threshold=None: the one each config.json recorded."""
    return [analyze_trial(r["config"], r["rows"], float(r["config"].get("threshold", 0.5)) if threshold is None
                          else threshold, z, setting, error=r["error"], finished=r["finished"])
            for r in load_trial_records(sweep_dir)]


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def trial_summary(t: TrialAnalysis) -> dict[str, Any]:
    """One summary.json entry. steps_to_transfer is null unless the trial transferred; `status` and
    `steps_to_transfer_text` say why (a lower bound `>N`, failed, not an organism), as the table and report do."""
    last = t.steps[-1] if t.steps else None
    return {
        "setting": t.setting, "lr": t.lr, "seed": t.seed, "trial": t.name, "status": t.status,
        "steps_to_transfer": t.steps_to_transfer, "steps_to_transfer_text": steps_text(t),
        "converged": t.converged, "lower_bound": t.lower_bound, "undefined_reason": t.undefined_reason,
        "max_steps": t.max_steps,
        # the note's bar height: LR x steps-to-transfer, LR x the lower bound, or null (failed, not an organism)
        "lr_x_steps": t.lr_x_steps, "lr_x_steps_is_lower_bound": t.lr_x_steps is not None and not t.converged,
        "complete": bool(t.steps) and t.steps[-1] == t.max_steps,
        "initial_attack_rate": t.initial_attack[0] if t.initial_attack else None,
        "initial_train_desired_rate": t.initial_train_desired,
        "final_attack_rate": t.final_attack[0] if t.final_attack else None,
        "final_eval_desired_rate": t.desired.get(last) if last is not None else None,
        "final_train_desired_rate": t.final_train_desired[1] if t.final_train_desired else None,
        "transfer_eval_desired_rate": t.transfer_desired, "transfer_eval_other_rate": t.transfer_other,
        "collapse": t.collapse, "collapse_reason": t.collapse_reason,
        "cut_rate": t.cut_rate, "cut_warning": cut_warning(t),
        "eval_curve": [[c["step"], c["rate"]] for c in t.curve],
        "train_desired_curve": [[s, r] for s, r in sorted(t.train_desired.items())],
        "n_eval": t.n_eval, "n_train": t.n_train,
        "stopped_early": t.stop_reason is not None, "stop_reason": t.stop_reason, "stop_step": t.stop_step,
        "error": t.error, "error_file": t.error_file,
    }


def trial_notes(t: TrialAnalysis) -> list[str]:
    """What a reader must know about a trial beyond its numbers: why it has no value, its error, a collapse, answers
    cut at the token limit."""
    notes = []
    if t.status == NOT_AN_ORGANISM:
        notes.append(f"{t.undefined_reason}; steps-to-transfer is undefined")
    if t.status == FAILED and not t.error:
        notes.append(t.undefined_reason or "failed")
    if t.error:
        notes.append(f"FAILED: {t.error}" + (f" (full error: {t.error_file})" if t.error_file else ""))
    if t.collapse:
        notes.append(f"transfer by COLLAPSE at step {t.steps_to_transfer}: {t.collapse_reason}; the desired behavior "
                     "did not transfer")
    warning = cut_warning(t)
    if warning:
        notes.append(f"WARNING: {warning}")
    return notes


def format_table(trials: Sequence[TrialAnalysis], threshold: float, collapse_other_rate: float | None = None) -> str:
    """Terminal table: one row per trial (eval attack-rate curve per checkpoint), then a note per trial that
    failed, is not an organism, or transferred by collapse."""
    width = max([len("steps-to-transfer")] + [len(steps_text(t)) for t in trials])
    header = (f"{'lr':>9} {'seed':>4} {'attack@0':>8} {'attack@end':>10} {'train desired':>13} "
              f"{'steps-to-transfer':>{width}} {'desired/other@T':>15} {'lr x steps':>10}  "
              "eval attack curve (step:rate)")
    rule = f"transfer = eval attack rate <= {threshold:g}"
    if collapse_other_rate is not None:
        rule += (f"; collapse = at transfer, eval other rate > {collapse_other_rate:g} and > desired rate, or vs "
                 f"step 0 coherent rate down > {COLLAPSE_COHERENT_DROP:g} or other rate up > {COLLAPSE_OTHER_RISE:g}")
    lines = [rule, header, "-" * len(header)]
    notes = []
    for t in sorted(trials, key=lambda t: (t.setting, t.lr, t.seed)):
        at_t = f"{_rate(t.transfer_desired)}/{_rate(t.transfer_other)}" if t.converged else "-"
        curve = " ".join(f"{c['step']}:{c['rate']:.2f}" for c in t.curve)
        final_train = t.final_train_desired[1] if t.final_train_desired else None
        lines.append(f"{t.lr:>9.3g} {t.seed:>4} {_rate(t.initial_attack[0] if t.initial_attack else None):>8} "
                     f"{_rate(t.final_attack[0] if t.final_attack else None):>10} {_rate(final_train):>13} "
                     f"{steps_text(t):>{width}} {at_t:>15} {lr_x_steps_text(t):>10}  {curve}")
        notes += [f"  {t.name}: {n}" for n in trial_notes(t)]
    return "\n".join(lines + (["notes:"] + notes if notes else []))


def failure_message(trials: Sequence[TrialAnalysis], n_trials: int,
                    errors: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The closing message of a sweep whose trials failed: each one's last error line and its full error's file.
    `errors` (trial name -> error.json) covers a failed trial that never wrote its config.json."""
    failed = {t.name: {"error": t.error, "error_file": t.error_file} for t in trials if t.status == FAILED or t.error}
    for name, err in (errors or {}).items():
        failed.setdefault(name, dict(err))
    lines = [f"{len(failed)} of {n_trials} trials failed:"]
    for name, err in sorted(failed.items()):
        lines.append(f"  {name}: {err.get('error') or 'no error recorded'}")
        if err.get("error_file"):
            lines.append(f"    full error: {err['error_file']}")
    return "\n".join(lines)


def summarize_trial(trial: dict[str, Any], rows: list[dict[str, Any]], threshold: float,
                    error: dict[str, Any] | None = None, finished: bool = False) -> dict[str, Any]:
    """One summary.json entry: eval.summary.trial_summary of eval.analysis.analyze_trial (the one per-trial
    analysis that the table and the report also use)."""
    return trial_summary(analyze_trial(trial, rows, threshold, error=error, finished=finished))
