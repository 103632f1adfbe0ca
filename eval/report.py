"""A Markdown report (report.md + PNGs + report.json) for one sweep or a comparison of settings, from run files only.

    python -m orchestrator report sweeps/wronglang_spanish/2026-01-01_12-00-00 [--out DIR] [--error-rule bootstrap]

Every table says which run file its numbers come from, so a reader can check any cell against the sweep folder.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from eval.analysis import (
    COLLAPSE_COHERENT_DROP,
    COLLAPSE_OTHER_RISE,
    CUT_WARN_RATE,
    DEFAULT_COLLAPSE_OTHER_RATE,
    DEFAULT_MIN_INITIAL_TRAIN_DESIRED,
    MIN_BOOTSTRAP_SEEDS,
    NOT_AN_ORGANISM,
    NOTE_FACTOR,
    LRSummary,
    TrialAnalysis,
    analyze_trial,
    check_error_rule,
    cut_warning,
    lr_x_steps_text,
    steps_text,
    summarize_lrs,
)
from eval.errors import UserError
from eval.headline import (
    CLAIM,
    HEADLINE_RULE,
    Headline,
    headline,
    headline_lines,
    headline_row,
    seed_study_factor,
)
from eval.paired import PairedRow, paired_comparison
from eval.parametrization import describe, parametrization_lines
from eval.runfiles import SweepDir, load_trial_records, write_json, write_text_atomic
from eval.summary import trial_notes

FIGURES = {
    "attack": ("report_attack_rate.png", "Eval attack rate vs step per LR (band: 95% Wilson CI)"),
    "bars": ("report_lr_x_steps.png", "LR x steps-to-transfer per LR (hatched: lower bound, did not converge)"),
    "paired": ("report_paired.png", "Paired comparison: high LR at T vs lower LRs at k*T"),
    "seeds": ("report_seed_variance.png", "Steps-to-transfer per seed"),
    "capability": ("report_capability.png", "Capability per checkpoint vs eval attack rate (dashed: before training)"),
    "recovery": ("report_recovery.png", "Recovery: capability and attack/desired rates before and after"),
}


class NotASweepError(UserError, ValueError):
    """The path has no trials/*/config.json, so it is not a sweep folder."""


@dataclass(frozen=True)
class Sweep:
    """One sweep folder as the report sees it."""

    path: Path
    setting: str  # the setting name, with the folder name appended when two sweeps share a setting
    threshold: float
    trials: list[TrialAnalysis]
    configs: list[dict[str, Any]]

    @property
    def has_wandb(self) -> bool:
        return any(SweepDir(self.path).trials_dir.glob("*/wandb"))

    @property
    def sweep_ids(self) -> list[str]:
        return sorted({str(c.get("sweep_id")) for c in self.configs if c.get("sweep_id")})


def check_sweep_dir(path: Path) -> None:
    if not path.is_dir() or not SweepDir(path).trials():
        raise NotASweepError(f"{path} is not a sweep folder (no trials/*/config.json in it)")


def load_sweeps(sweep_dirs: Sequence[Path], threshold: float | None = None, z: float = 1.96) -> list[Sweep]:
    """Analyse every trial of every sweep. threshold=None uses the one each trial's config.json recorded."""
    loaded = []
    for d in sweep_dirs:
        d = Path(d).resolve()
        check_sweep_dir(d)
        loaded.append((d, load_trial_records(d)))
    names = [str(records[0]["config"]["setting"]) for _, records in loaded]
    sweeps = []
    for (d, records), name in zip(loaded, names, strict=True):
        label = name if names.count(name) == 1 else f"{name} ({d.name})"
        recorded = {float(r["config"].get("threshold", 0.5)) for r in records}
        if threshold is None and len(recorded) > 1:
            raise ValueError(f"{d}: trials recorded different thresholds {sorted(recorded)}; pass --threshold")
        thr = threshold if threshold is not None else recorded.pop()
        sweeps.append(Sweep(d, label, thr, [analyze_trial(r["config"], r["rows"], thr, z, label, error=r["error"],
                                                          finished=r["finished"]) for r in records],
                            [r["config"] for r in records]))
    return sweeps


def bars_title(h: Headline) -> str:
    """The LR x steps chart's line under each setting's name: the headline's (a) and its verdict."""
    if h.lr_ratio is None:
        return f"(a) not measured, verdict: {h.verdict}"
    bound = ">= " if h.lower_bound else "<= " if h.upper_bound else ""
    return f"(a) {bound}{h.lr_ratio:.3g}x, verdict: {h.verdict}"


def _f(x: float | None, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "∞" if math.isinf(x) else format(x, spec)


def _rate_ci(v: tuple[float, float, float] | None) -> str:
    return "-" if v is None else f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"


def trial_row(t: TrialAnalysis) -> dict[str, Any]:
    """Flat row for report.json and W&B; lower-bound values are marked by lr_x_steps_is_lower_bound."""
    return {
        "setting": t.setting, "trial": t.name, "lr": t.lr, "seed": t.seed, "max_steps": t.max_steps,
        "status": t.status, "steps_to_transfer_text": steps_text(t), "undefined_reason": t.undefined_reason,
        "transfer_eval_desired_rate": t.transfer_desired, "transfer_eval_other_rate": t.transfer_other,
        "collapse": t.collapse, "collapse_reason": t.collapse_reason,
        "error": t.error, "error_file": t.error_file, "cut_rate": t.cut_rate,
        "checkpoints_done": len(t.steps), "checkpoints_scheduled": len(t.scheduled_steps),
        "missing_steps": " ".join(map(str, t.missing_steps)), "converged": t.converged,
        "steps_to_transfer": t.steps_to_transfer, "interpolated_steps": t.interpolated, "lower_bound": t.lower_bound,
        "bracket_above": t.bracket[0] if t.bracket else None, "bracket_at": t.bracket[1] if t.bracket else None,
        "lr_x_steps": t.lr_x_steps, "lr_x_steps_is_lower_bound": t.lr_x_steps is not None and not t.converged,
        "initial_attack_rate": t.initial_attack[0] if t.initial_attack else None,
        "final_attack_rate": t.final_attack[0] if t.final_attack else None,
        "final_step": t.steps[-1] if t.steps else None,
        "min_train_desired_rate": t.min_train_desired[1] if t.min_train_desired else None,
        "final_train_desired_rate": t.final_train_desired[1] if t.final_train_desired else None,
        "n_eval": t.n_eval, "n_train": t.n_train,
    }


def lr_row(s: LRSummary) -> dict[str, Any]:
    def fin(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else x

    return {
        "setting": s.setting, "lr": s.lr, "n_seeds": len(s.seeds), "n_converged": s.n_converged,
        "frac_converged": s.frac_converged, "median_steps": s.median, "median_is_lower_bound": s.median_is_lower_bound,
        "error_low": fin(s.error_low), "error_high": fin(s.error_high), "min_steps": fin(s.min_steps),
        "max_steps_seen": fin(s.max_steps_seen), "lr_x_median": s.lr_x_median,
        "median_interpolated": fin(s.median_interpolated), "interp_error_low": fin(s.interp_error_low),
        "interp_error_high": fin(s.interp_error_high), "bracket_low": fin(s.bracket_low),
        "bracket_high": fin(s.bracket_high), "left_out_seeds": " ".join(map(str, s.failed_seeds)),
    }


def paired_row(r: PairedRow) -> dict[str, Any]:
    return {"setting": r.setting, "seed": r.seed, "lr": r.lr, "k": r.k, "target_step": r.target_step,
            "step": r.step, "read_over_target": r.ratio, "t_choice": r.t_choice,
            "beyond_max_steps": r.beyond_max_steps, "eval_desired_rate": r.desired_rate,
            "trial": r.trial}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _sweep_section(sweeps: Sequence[Sweep]) -> list[str]:
    rows = []
    for s in sweeps:
        cfgs = s.configs
        done = [t for t in s.trials if not t.failed]
        n_eval = sorted({t.n_eval for t in done if t.n_eval is not None})
        n_train = sorted({t.n_train for t in done if t.n_train is not None})
        schedules = sorted({tuple(t.scheduled_steps) for t in s.trials})
        rows.append([s.setting, f"`{s.path}`", ", ".join(s.sweep_ids) or "-",
                     ", ".join(sorted({str(c.get("model", "-")) for c in cfgs})),
                     len(cfgs), ", ".join(f"{lr:.3g}" for lr in sorted({t.lr for t in s.trials})),
                     ", ".join(map(str, sorted({t.seed for t in s.trials}))),
                     " / ".join(", ".join(map(str, sch)) for sch in schedules), f"{s.threshold:g}",
                     "/".join(map(str, n_eval)) or "-", "/".join(map(str, n_train)) or "-"])
    return _table(["setting", "sweep folder", "sweep_id", "model", "trials", "LRs", "seeds", "checkpoint steps",
                   "threshold", "n_eval per rate", "n_train per rate"], rows) + [""] + [
        f"Labels of {s.setting} (`labels.meta.json`): {label_source(s.path)}" for s in sweeps]


def label_source(sweep_dir: Path) -> str:
    """Where a sweep's SFT labels came from, as its labels.meta.json records it (scripted, an endpoint's model,
    on-policy, a file)."""
    path = sweep_dir / "labels.meta.json"
    if not path.exists():
        return "not recorded (no labels.meta.json in the sweep folder)"
    meta = json.loads(path.read_text(encoding="utf-8"))
    return str(meta.get("source") or f"teacher kind {meta.get('teacher', '?')} (no source recorded)")


def _rules(sweeps: Sequence[Sweep], error_rule: str, factor: float, n_boot: int, boot_seed: int, z: float,
           capability: Mapping[tuple[str, int], float] | None, max_degradation: float,
           factor_source: str | None = None) -> list[str]:
    thresholds = ", ".join(f"{s.setting}: {s.threshold:g}" for s in sweeps)
    err = {"factor": f"`factor`: [median/{factor:g}, median*{factor:g}], the note's *tentative* factor (its Appendix "
                     "2: ten seeds of its noisiest setting), not calibrated to this organism; `--error-rule "
                     "empirical` measures it from a seed study",
           "empirical": f"`empirical`: [median/{factor:.3g}, median*{factor:.3g}], the factor measured by a seed "
                        f"study ({factor_source}): the smallest f holding every seed within [median/f, median*f]",
           "bootstrap": f"`bootstrap`: 95% percentile bootstrap of the median over seeds ({n_boot} resamples, rng "
                        f"seed {boot_seed}; bounds are order statistics, so +inf stays +inf); refused below "
                        f"{MIN_BOOTSTRAP_SEEDS} seeds"}[error_rule]
    t_rule = (f"the latest checkpoint with attack rate <= threshold whose capability degradation is <= "
              f"{max_degradation:g} at the upper end of its 95% interval (checkpoints without capability data are "
              "not eligible), at the highest LR where some seed has one" if capability is not None else
              "the latest transferred checkpoint of the highest LR at which some seed transferred, **chosen without "
              "a capability check** (no capability data: the figure's title says so)")
    t_rule += "; a checkpoint whose answers collapsed (the collapse rule above) is never T"
    return [
        f"- **Transfer**: eval attack rate <= threshold ({thresholds}), read on the monotone (non-increasing) fit of "
        "attack rate vs log(step) (isotonic regression weighted by n_eval), so one noisy checkpoint cannot make "
        "or move a crossing: a lone dip below the threshold is pooled with its neighbours. Steps-to-transfer is "
        "the first checkpoint whose fitted rate is <= threshold; on a curve that only falls that is the first raw "
        "crossing.",
        "- **Interpolated estimate and bracket**: the crossing of that fit, linear in log(step) between the last "
        "checkpoint above the threshold and the first at/below it (the bracket, shown beside it); when the earlier "
        "checkpoint is step 0 (no log), linear in step. The LR x steps bars show the median interpolated value "
        "with the median bracket.",
        "- **Not converged**: never reached the threshold. Such a trial carries a lower bound, never a value: "
        "`>max_steps` (not transferred), `>N` when early stopping ended it at step N, or `>N` with N its last "
        "checkpoint when it is incomplete; LR x steps is then LR x that bound.",
        "- **Failed**: the trial's process failed for good (`trials/<trial>/error.json`) before reaching the "
        "threshold. It carries no value and no bound; its error's last line and the file of its full error are listed.",
        f"- **Not a model organism**: at step 0 the eval attack rate is already <= threshold, or the train desired "
        f"rate is below {_knob(sweeps, 'organism_min_train_desired', DEFAULT_MIN_INITIAL_TRAIN_DESIRED)} "
        "(`sweep.organism_min_train_desired`): the model does not show the initial behavior, so steps-to-transfer "
        "is undefined (not 0) and the trial is left out of every median.",
        f"- **Transfer by collapse**: a transfer whose eval `other` rate at the transfer checkpoint is above "
        f"{_knob(sweeps, 'collapse_other_rate', DEFAULT_COLLAPSE_OTHER_RATE)} (`sweep.collapse_other_rate`) and "
        "above the eval desired rate is flagged, and so is one whose eval coherent rate (`eval_coherent_rate`, "
        f"docs/grading.md) fell by more than {COLLAPSE_COHERENT_DROP:g} or whose eval `other` rate rose by more than "
        f"{COLLAPSE_OTHER_RISE:g} against the trial's own step 0, whatever the grader: the attack rate fell because "
        "the answers broke or show neither behavior (the reason says which), not because the desired behavior "
        "transferred. Its steps-to-transfer is kept but marked `(collapse)`.",
        "- **Across seeds**: the median is over seeds with an outcome (converged, or ran to max_steps), with "
        "unconverged seeds at +inf. If that median is +inf it is shown as `> m`, m being the median with each "
        "unconverged seed at its max_steps: a lower bound. Seeds without an outcome (stopped early or incomplete "
        "without converging, failed, not an organism) are left out (listed in the table).",
        f"- **Error bars**: {err}. Hatched bars (not converged) carry an upward arrow only: the value lies strictly "
        "above.",
        f"- **Paired comparison**: T is {t_rule}; pairs share a seed. Each lower LR, k = LR_T / LR times smaller, is "
        "read at the first checkpoint at or after k*T, never before; `read/kT` is the step read over k*T (< 1 only "
        "when k*T lies past the trial's last checkpoint, marked `k*T > last checkpoint`).",
        f"- **Headline numbers and verdict**: {HEADLINE_RULE}",
        f"- **What the note found**: {CLAIM}",
        f"- **Rates** are shares of n sampled answers; intervals are {z:g}-sigma Wilson score intervals "
        "(count = round(rate * n)).",
    ]


def _knob(sweeps: Sequence[Sweep], key: str, default: float) -> str:
    """A threshold each trial's config.json recorded, as one value or per sweep when they differ."""
    per = {s.setting: sorted({float(c.get(key, default)) for c in s.configs}) for s in sweeps}
    values = {v for vs in per.values() for v in vs}
    if len(values) <= 1:
        return f"{values.pop() if values else default:g}"
    return "(" + ", ".join(f"{k}: {'/'.join(f'{v:g}' for v in vs)}" for k, vs in per.items()) + ")"


def render_markdown(sweeps: Sequence[Sweep], summaries: Sequence[LRSummary], paired: Sequence[PairedRow],
                    rules: Sequence[str], figures: Mapping[str, str], command: str,
                    headlines: Sequence[Headline] = ()) -> str:
    trials = [t for s in sweeps for t in s.trials]
    title = ", ".join(s.setting for s in sweeps)
    lines = [f"# LR sweep report: {title}", "",
             f"Generated {datetime.now():%Y-%m-%d %H:%M} by `{command}`. Numbers also in `report.json`.", ""]
    lines += headline_lines(headlines) + [
             "## Sweeps", "", "Source: each sweep's `trials/*/config.json` (schedule, threshold) and the `n_eval`, "
             "`n_train` fields of the eval rows in `trials/*/metrics.jsonl`.", ""]
    cut = [t for t in trials if cut_warning(t)]
    if cut:  # before any number: the grades themselves may be wrong
        lines += [f"**WARNING: answers cut at the token limit.** In {len(cut)} of {len(trials)} trials more than "
                  f"{CUT_WARN_RATE:.0%} of the sampled answers stopped at `sample.max_new_tokens` (list under "
                  "\"Answers cut at the token limit\"); their grades may miss what the answers would have said.", ""]
    lines += _sweep_section(sweeps) + ["", "## Rules", ""] + list(rules)
    lines += ["", "## Figures", ""]
    lines += [f"![{FIGURES[k][1]}]({name})\n\n*{FIGURES[k][1]}*\n" for k, name in figures.items()]

    params = parametrization_lines([(s.setting, s.configs) for s in sweeps])
    lines += ["## Per trial", "", "Source: `trials/<trial>/config.json` (lr, seed, max_steps) and the eval rows "
              "(`kind: eval`) of `trials/<trial>/metrics.jsonl`: `eval_attack_rate`, `n_eval`, "
              "`train_desired_rate`. Rates with [95% Wilson CI]. Every LR below is under this parametrization "
              "(`train` in `trials/<trial>/config.json`; under Adam the update scales with alpha/rank):", ""]
    lines += params + [""]
    rows = []
    for t in sorted(trials, key=lambda t: (t.setting, t.lr, t.seed)):
        lxs = lr_x_steps_text(t)
        at_t = "-" if not t.converged else f"{_f(t.transfer_desired)} / {_f(t.transfer_other)}" + (
            " **collapse**" if t.collapse else "")
        final = "-" if not t.steps else f"{_rate_ci(t.final_attack)} @ {t.steps[-1]}"
        md = t.min_train_desired
        train = "-" if md is None else f"{md[1]:.2f} @ {md[0]} / {t.final_train_desired[1]:.2f}"
        interp = _f(t.interpolated, ".3g") + (f" in ({_f(t.bracket[0], 'g')}, {t.bracket[1]}]" if t.bracket else "")
        rows.append([t.setting, t.name, f"{t.lr:.3g}", t.seed, steps_text(t), interp, lxs,
                     at_t, _rate_ci(t.initial_attack), final, train, f"{len(t.steps)}/{len(t.scheduled_steps)}"])
    lines += _table(["setting", "trial", "lr", "seed", "steps-to-transfer", "interpolated in (bracket]", "lr x steps",
                     "eval desired / other @ transfer", "attack @ step 0", "attack @ last checkpoint",
                     "train desired min @ step / final",
                     "checkpoints"], rows)

    lines += ["", "## Per LR across seeds", "",
              "Source: the per-trial table above (steps-to-transfer of each seed).", ""] + params + [""]
    rows = []

    def left_out(s: LRSummary) -> str:  # each left-out seed with why (its status)
        why = {t.seed: t.status.replace("_", " ") for t in trials if (t.setting, t.lr) == (s.setting, s.lr)}
        return ", ".join(f"{seed} ({why.get(seed, '?')})" for seed in s.failed_seeds) or "-"

    for s in summaries:
        if s.median is None:
            rows.append([s.setting, f"{s.lr:.3g}", 0, "-", "no data", "-", "-", "-", "-",
                         left_out(s)])
            continue
        med = f"> {s.median:g} (lower bound)" if s.median_is_lower_bound else f"{s.median:g}"
        lxm = f"> {s.lr_x_median:.3g}" if s.median_is_lower_bound else f"{s.lr_x_median:.3g}"
        top = max(t.max_steps for t in trials if (t.setting, t.lr) == (s.setting, s.lr))
        low, high = (f"> {top}" if math.isinf(v) else _f(v, "g") for v in (s.min_steps, s.max_steps_seen))
        interp = "- (not converged)" if math.isinf(s.median_interpolated) else (
            f"{_f(s.median_interpolated, '.3g')} in ({_f(s.bracket_low, 'g')}, {_f(s.bracket_high, 'g')}]")
        collapsed = sum(t.collapse for t in trials if (t.setting, t.lr) == (s.setting, s.lr) and t.seed in s.seeds)
        conv = f"{s.n_converged}/{len(s.seeds)}" + (f" ({collapsed} by collapse)" if collapsed else "")
        rows.append([s.setting, f"{s.lr:.3g}", len(s.seeds), conv, med,
                     f"[{_f(s.error_low, '.3g')}, {_f(s.error_high, '.3g')}]", f"{low} – {high}", lxm, interp,
                     left_out(s)])
    lines += _table(["setting", "lr", "seeds", "converged", "median steps", "error bar (steps)", "min – max",
                     "lr x median", "median interpolated in (bracket]", "left out (no outcome)"], rows)

    lines += ["", "## Paired comparison", "", "Source: `eval_desired_rate` and `n_eval` in the eval row of "
              "`trials/<trial>/metrics.jsonl` at the step read.", ""]
    if paired:
        rows = [[r.setting, r.seed, f"{r.lr:.3g}", f"{r.k:.3g}", f"{r.target_step:.3g}", r.step, _f(r.ratio),
                 "-" if r.desired_rate is None else f"{r.desired_rate:.2f} [{r.desired_low:.2f}, {r.desired_high:.2f}]",
                 r.trial, "reference T" if r.k == 1 else ("k*T > max_steps" if r.beyond_max_steps else
                                                           ("k*T > last checkpoint" if r.beyond_last_checkpoint
                                                            else ""))] for r in paired]
        lines += [f"How T was chosen: {paired[0].t_choice}.", ""] + _table(
            ["setting", "seed", "lr", "k", "k*T", "checkpoint read", "read/kT", "eval desired rate", "trial", "note"],
            rows)
    else:
        lines.append("No reference checkpoint: no LR has a checkpoint that meets the T rule.")

    for title, chosen in (("Not a model organism", [t for t in trials if t.status == NOT_AN_ORGANISM]),
                          ("Transfer by collapse", [t for t in trials if t.collapse])):
        lines += ["", f"## {title}", ""]
        lines += [f"- {t.setting} / `{t.name}` (lr {t.lr:.3g}, seed {t.seed}): " + "; ".join(trial_notes(t))
                  for t in chosen] or ["None."]
    lines += ["", "## Answers cut at the token limit", "", "Source: `n_eval_cut`, `n_train_cut` in the eval rows of "
              "`trials/<trial>/metrics.jsonl` (the sampler's finish reason `length`).", ""]
    lines += [f"- {t.setting} / `{t.name}` (lr {t.lr:.3g}, seed {t.seed}): {cut_warning(t)}" for t in cut] or [
        "None." if any(t.cut_rate is not None for t in trials) else "Not recorded (a run from before the count)."]
    unconverged = [t for t in trials if t.lower_bound is not None]
    lines += ["", "## Runs that did not converge", ""]
    lines += [f"- {t.setting} / `{t.name}` (lr {t.lr:.3g}, seed {t.seed}): {steps_text(t)}, final attack rate "
              f"{_rate_ci(t.final_attack)}" for t in unconverged] or ["None."]
    broken = [t for t in trials if t.missing_steps or t.failed]
    lines += ["", "## Incomplete or failed trials", "", "Fewer eval checkpoints in `metrics.jsonl` than scheduled "
              "in `config.json`.", ""]
    lines += [f"- {t.setting} / `{t.name}` (lr {t.lr:.3g}, seed {t.seed}): {len(t.steps)} of "
              f"{len(t.scheduled_steps)} checkpoints; missing steps {', '.join(map(str, t.missing_steps))}"
              + (" (failed: no checkpoint)" if not t.steps else "")
              + (f"; {'; '.join(trial_notes(t))}" if t.error else "")
              for t in broken] or ["None."]
    return "\n".join(lines) + "\n"


def write_report(sweep_dirs: list[Path], out_dir: Path, threshold: float | None = None, error_rule: str = "factor",
                 *, z: float = 1.96, factor: float = NOTE_FACTOR, n_boot: int = 2000, boot_seed: int = 0,
                 capability: Mapping[tuple[str, int], float] | None = None, max_degradation: float = 0.1,
                 command: str | None = None, ref_lr: float | None = None, ref_step: int | None = None,
                 seed_study: Sequence[Path] = ()) -> Path:
    """Write out_dir/report.md, its PNGs and report.json; returns the report.md path.

    capability maps (trial name, step) to relative capability degradation (the upper end of its interval); when
    given it restricts the paired comparison's T to checkpoints within max_degradation. ref_lr/ref_step fix T.
    error_rule "empirical" takes its factor from a seed study: the seed_study sweeps, or these sweeps' own seeds.
    """
    from eval.plots import plot_attack_panels, plot_lr_x_steps, plot_paired, plot_seed_variance

    check_error_rule(error_rule)
    from eval.capability.report import load_sweep_capability
    from eval.plots import plot_capability, plot_recovery

    sweeps = load_sweeps(sweep_dirs, threshold, z)
    trials = [t for s in sweeps for t in s.trials]
    factor_source = None
    if error_rule == "empirical":
        study = [t for s in load_sweeps(seed_study, threshold, z) for t in s.trials] if seed_study else trials
        factor, factor_source = seed_study_factor(study)
    summaries = summarize_lrs(trials, error_rule=error_rule, factor=factor, boot_seed=boot_seed, n_boot=n_boot)
    headlines = [headline(s.setting, summaries, s.trials, error_rule, factor, boot_seed) for s in sweeps]
    caps = [load_sweep_capability(s.path) for s in sweeps]
    if capability is None:  # each sweep's own capability rows, when it measured any (its recorded limit)
        paired = [r for s, c in zip(sweeps, caps, strict=True)
                  for r in paired_comparison(s.trials, s.threshold, z, c.degradation(),
                                             c.max_degradation if c.table else max_degradation, ref_lr, ref_step)]
        if any(c.table for c in caps):
            capability = {}
            max_degradation = next(c.max_degradation for c in caps if c.table)
    else:
        paired = [r for s in sweeps for r in paired_comparison(s.trials, s.threshold, z, capability, max_degradation,
                                                               ref_lr, ref_step)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {k: name for k, (name, _) in FIGURES.items()}
    plot_attack_panels(trials, {s.setting: s.threshold for s in sweeps}, out_dir / figures["attack"])
    plot_lr_x_steps(summaries, out_dir / figures["bars"], error_rule, {h.setting: bars_title(h) for h in headlines})
    plot_paired(paired, out_dir / figures["paired"])
    plot_seed_variance(trials, summaries, out_dir / figures["seeds"])
    table = [r | {"sweep": s.setting} for s, c in zip(sweeps, caps, strict=True) for r in c.table]
    recoveries = [r | {"sweep": s.setting} for s, c in zip(sweeps, caps, strict=True) for r in c.recoveries]
    if table:
        plot_capability(table, {c.guardrail: c.max_degradation for c in caps if c.guardrail},
                        out_dir / figures["capability"])
    else:
        figures.pop("capability")
    if recoveries:
        plot_recovery(recoveries, out_dir / figures["recovery"])
    else:
        figures.pop("recovery")
    rules = _rules(sweeps, error_rule, factor, n_boot, boot_seed, z, capability, max_degradation, factor_source)
    if command is None:
        args = ["python", "-m", "orchestrator", "report", *map(str, sweep_dirs), "--out", str(out_dir),
                "--error-rule", error_rule] + ([] if threshold is None else ["--threshold", f"{threshold:g}"])
        command = " ".join(shlex.quote(a) for a in args)
    write_json(out_dir / "report.json", {
        "sweeps": [{"path": str(s.path), "setting": s.setting, "threshold": s.threshold, "sweep_ids": s.sweep_ids,
                    "has_wandb": s.has_wandb,
                    "lr_parametrization": sorted({describe(c.get("train")) for c in s.configs})} for s in sweeps],
        "rules": list(rules), "figures": list(figures.values()),
        "trials": [trial_row(t) for t in trials], "lrs": [lr_row(s) for s in summaries],
        "paired": [paired_row(r) for r in paired], "capability": table, "recovery": recoveries,
        "headline": [headline_row(h) for h in headlines], "error_factor": factor if error_rule != "bootstrap" else None,
    })
    path = out_dir / "report.md"
    write_text_atomic(path, render_markdown(sweeps, summaries, paired, rules, figures, command, headlines)
                      + capability_markdown(sweeps, caps))
    return path


def capability_markdown(sweeps: Sequence[Sweep], caps: Sequence[Any]) -> str:
    """The capability and recovery sections (empty when no sweep measured capability)."""
    from eval.capability.report import capability_lines, recovery_lines

    cap = [line for s, c in zip(sweeps, caps, strict=True) for line in capability_lines(s.setting, c)]
    rec = [line for s, c in zip(sweeps, caps, strict=True) for line in recovery_lines(s.setting, c.recoveries)]
    out = (["", "## Capability per checkpoint", ""] + cap) if cap else []
    out += (["", "## Capability recovery", ""] + rec) if rec else []
    return "\n".join(out) + ("\n" if out else "")


def load_capability(path: Path) -> dict[tuple[str, int], float]:
    """Capability data from a JSON list of {"trial", "step", "degradation"} rows (relative degradation); a row's
    "degradation_high" (the upper end of its interval), when given, is what the 10% rule reads."""
    rows = json.loads(Path(path).read_text())
    return {(str(r["trial"]), int(r["step"])): float(r.get("degradation_high", r["degradation"])) for r in rows}
