"""The note's two headline numbers per setting, with intervals and a verdict, and the seed study's spread factor.

The note's finding is that LR x steps-to-transfer is not constant across LRs (under a 1/LR law it would be): "LR x
max steps" of the low LRs that never transferred is 4x-56x the "LR x steps-to-transfer" of the high LRs that did,
so a 10x LR gap is worth ~40x-560x steps, not 10x. Per setting:

- high LR H: the highest LR whose median over seeds converged; low LR L: the lowest LR of the sweep below it.
- (a) lr_ratio = (L x steps_L) / (H x steps_H), steps being the interpolated crossing, or for an unconverged L its
  own max_steps (then (a) is a lower bound: L would transfer strictly later, if ever). 1 under a 1/LR law.
- (b) step_ratio_10x = (steps_L / steps_H) ** (1 / log10(H / L)): the step ratio for a 10x LR gap; 10 under 1/LR.
  It is a monotone function of (a) (b = 10 * a ** (1 / log10(H / L))), so it shares its interval and verdict.
- interval: (a) per seed (the seeds both LRs ran, paired since a seed fixes the data order), then the error rule
  applied to their median ([m/f, m*f] for factor/empirical, the median's bootstrap for bootstrap), widened to
  cover every seed's own ratio; +inf above when (a) is a lower bound.
- verdict: "faster than 1/LR" when the interval lies above 1; "slower than 1/LR" when it lies below 1;
  "consistent with 1/LR" when it holds 1 and spans at most CONSISTENT_SPAN (16x: the note's 4x either way);
  otherwise "inconclusive at this many seeds".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from eval.analysis import NOT_TRANSFERRED, LRSummary, TrialAnalysis, bootstrap_median_interval, summarize_lrs

FASTER, CONSISTENT, SLOWER, INCONCLUSIVE = ("faster than 1/LR", "consistent with 1/LR", "slower than 1/LR",
                                            "inconclusive at this many seeds")
CONSISTENT_SPAN = 16.0  # widest interval (high / low) that still reads as "consistent": the note's 4x either way
MIN_SPREAD_SEEDS = 5  # converged seeds an LR needs before its spread counts in a seed study


@dataclass(frozen=True)
class Headline:
    """The note's numbers for one setting; None fields when no pair of LRs allows them (reason says why)."""

    setting: str
    high_lr: float | None
    low_lr: float | None
    lr_ratio: float | None  # (a): LR x steps of the low LR over that of the high LR
    lr_ratio_low: float | None
    lr_ratio_high: float | None  # +inf when lr_ratio is a lower bound
    lower_bound: bool  # the low LR did not converge, or the high LR transferred by its first checkpoint: the true
    # ratios lie above
    step_ratio_10x: float | None  # (b)
    step_ratio_low: float | None
    step_ratio_high: float | None
    n_seeds: int  # seeds paired between the two LRs
    verdict: str
    reason: str
    collapsed: int = 0  # transfers by collapse, counted as not transferred
    upper_bound: bool = False  # the low LR transferred by its first checkpoint: the true ratios lie below
    caveat: str = ""  # why the numbers are bounds, said with them


def verdict(low: float, high: float) -> str:
    """The one-line verdict from the interval of (a) (1 under a 1/LR law)."""
    if low > 1:
        return FASTER
    if high < 1:
        return SLOWER
    return CONSISTENT if high / low <= CONSISTENT_SPAN * (1 + 1e-9) else INCONCLUSIVE


def ratio_interval(ratios: Sequence[float], error_rule: str, factor: float, lower_bound: bool,
                   boot_seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high) of the per-seed ratios; see the module docstring for the rule."""
    med = float(np.median(ratios))
    if error_rule == "bootstrap":
        low, high = bootstrap_median_interval(ratios, boot_seed)
    else:
        low, high = med / factor, med * factor
    low, high = min(low, min(ratios)), max(high, max(ratios))
    return med, low, (math.inf if lower_bound else high)


def _steps(t: TrialAnalysis) -> float | None:
    """A seed's steps for the headline: its interpolated crossing, or its lower bound when it did not converge, or
    its first checkpoint when it transferred by then (an upper bound: see at_first_checkpoint)."""
    if at_first_checkpoint(t):
        return float(t.steps_to_transfer)
    if t.converged:
        return t.interpolated if t.interpolated else float(t.steps_to_transfer or 0) or None
    return float(t.lower_bound) if t.lower_bound else None


def at_first_checkpoint(t: TrialAnalysis) -> bool:
    """Transferred by its first checkpoint after step 0. How many steps it needed is then below what the schedule
    resolves (there is no fraction of a step, and no checkpoint before the first), so that checkpoint's step is an
    upper bound, not a measurement: interpolating toward step 0 would invent one."""
    return t.converged and (t.bracket is None or not t.bracket[0])


def without_collapse(trials: Sequence[TrialAnalysis]) -> list[TrialAnalysis]:
    """The trials with each transfer by collapse read as no transfer: the attack rate fell because the answers
    broke, so the desired behavior had not transferred by that step, and after it the answers say nothing (a lower
    bound at the collapse step, as for a trial stopped there)."""
    return [replace(t, steps_to_transfer=None, interpolated=None, bracket=None, lower_bound=t.steps_to_transfer,
                    lr_x_steps=t.lr * t.steps_to_transfer, status=NOT_TRANSFERRED, collapse=False)
            if t.collapse and t.converged else t for t in trials]


def headline(setting: str, summaries: Sequence[LRSummary], trials: Sequence[TrialAnalysis],
             error_rule: str = "factor", factor: float = 4.0, boot_seed: int = 0) -> Headline:
    """The note's numbers for one setting from its per-LR summaries and per-trial analyses. A transfer by collapse
    is not the desired behavior transferring: for these numbers it counts as not transferred (without_collapse)."""
    trials = [t for t in trials if t.setting == setting]
    collapsed = sum(t.collapse and t.converged for t in trials)
    if collapsed:  # the per-LR medians counted those transfers: recount the setting without them
        trials = without_collapse(trials)
        summaries = summarize_lrs(trials)
    ss = sorted((s for s in summaries if s.setting == setting and s.median is not None), key=lambda s: s.lr)
    high = next((s for s in reversed(ss) if not s.median_is_lower_bound and (s.bar_steps or 0) > 0), None)
    low = ss[0] if ss and high is not None and ss[0].lr < high.lr else None
    if high is None or low is None:
        why = "no LR converged" if high is None else "no LR below the highest converged one"
        return Headline(setting, high.lr if high else None, None, None, None, None, False, None, None, None, 0,
                        INCONCLUSIVE, why, collapsed)
    by = {(t.lr, t.seed): t for t in trials}  # this setting's, filtered above
    paired = sorted(set(high.seeds) & set(low.seeds))
    ratios = []
    for seed in paired:
        s_h, s_l = _steps(by[(high.lr, seed)]), _steps(by[(low.lr, seed)])
        if s_h and s_l:
            ratios.append(low.lr * s_l / (high.lr * s_h))
    if not ratios:  # no seed ran at both LRs: the ratio of the bars
        ratios = [low.lr * low.bar_steps / (high.lr * high.bar_steps)]
    high_first = any(at_first_checkpoint(by[(high.lr, s)]) for s in paired)  # (a) then lies above
    low_first = any(at_first_checkpoint(by[(low.lr, s)]) for s in paired)  # (a) then lies below
    bound = low.median_is_lower_bound or high_first
    if bound and low_first:
        return Headline(setting, high.lr, low.lr, None, None, None, False, None, None, None, len(paired),
                        INCONCLUSIVE, f"lr {low.lr:.3g} and lr {high.lr:.3g} both transferred by their first "
                        "checkpoint: fewer steps than the schedule resolves; add lower LRs", collapsed)
    a, a_low, a_high = ratio_interval(ratios, error_rule, factor, bound, boot_seed)
    a_low = 0.0 if low_first else a_low
    decades = math.log10(high.lr / low.lr)

    def per_10x(x: float) -> float:
        return 10 * x ** (1 / decades)

    caveats = [f"lr {lr:.3g} transferred by its first checkpoint, so its steps are an upper bound"
               for lr, first in ((high.lr, high_first), (low.lr, low_first)) if first]
    if low.median_is_lower_bound:
        caveats.append("the low LR's LR x max_steps is too small to show the effect: give it a larger step budget")
    return Headline(setting, high.lr, low.lr, a, a_low, a_high, bound, per_10x(a), per_10x(a_low),
                    per_10x(a_high), len(ratios), verdict(a_low, a_high),
                    f"lr {low.lr:.3g} vs lr {high.lr:.3g} over {len(ratios)} seed(s)", collapsed, low_first,
                    "; ".join(caveats))


def headline_text(h: Headline) -> str:
    """One line per setting, as the terminal, report.md and W&B show it."""
    collapsed = f"; {h.collapsed} transfer(s) by collapse counted as not transferred" if h.collapsed else ""
    if h.lr_ratio is None:
        return f"{h.setting}: no headline numbers ({h.reason}{collapsed}); verdict: {h.verdict}"
    ge = ">= " if h.lower_bound else "<= " if h.upper_bound else ""

    def iv(lo: float | None, hi: float | None) -> str:
        return f"[{lo:.3g}, {'inf' if hi is None or math.isinf(hi) else format(hi, '.3g')}]"

    return (f"{h.setting}: LR x steps, lr {h.low_lr:.3g} over lr {h.high_lr:.3g} = {ge}{h.lr_ratio:.3g}x "
            f"{iv(h.lr_ratio_low, h.lr_ratio_high)} (1 under 1/LR); steps for a 10x LR gap = {ge}"
            f"{h.step_ratio_10x:.3g}x {iv(h.step_ratio_low, h.step_ratio_high)} (10 under 1/LR); "
            f"{h.n_seeds} seed(s){collapsed}; verdict: {h.verdict}"
            + (f"; {h.caveat}" if h.caveat and h.verdict == INCONCLUSIVE else ""))


def spread_factor(values: Sequence[float]) -> float:
    """Empirical spread factor of steps-to-transfer at one LR: the smallest f with every seed in
    [median/f, median*f], i.e. max(max/median, median/min) over the converged seeds' values."""
    vals = [float(v) for v in values if v and math.isfinite(v)]
    if len(vals) < 2:
        raise ValueError(f"a spread factor needs >= 2 converged seeds, got {len(vals)}")
    med = float(np.median(vals))
    return max(max(vals) / med, med / min(vals))


def seed_study_factor(trials: Sequence[TrialAnalysis], min_seeds: int = MIN_SPREAD_SEEDS) -> tuple[float, str]:
    """The empirical error factor for --error-rule empirical: the largest spread_factor over the (setting, LR)
    groups with >= min_seeds converged seeds (the note took the setting with the most variance). Returns the factor
    and where it came from; a clear error when no LR has enough seeds."""
    groups: dict[tuple[str, float], list[float]] = {}
    for t in trials:
        if t.converged and t.interpolated:
            groups.setdefault((t.setting, t.lr), []).append(t.interpolated)
    usable = {k: spread_factor(v) for k, v in groups.items() if len(v) >= min_seeds}
    if not usable:
        most = max((len(v) for v in groups.values()), default=0)
        raise ValueError(f"--error-rule empirical needs a seed study: some LR with >= {min_seeds} converged seeds "
                         f"(the most here is {most}). Run one LR with sweep.seeds of 10 (the note ran ten), then "
                         "report it with --seed-study SWEEP_DIR, or use --error-rule factor")
    (setting, lr), f = max(usable.items(), key=lambda kv: kv[1])
    n = len(groups[(setting, lr)])
    return f, f"max/median spread of {n} converged seeds at {setting} lr {lr:.3g}"


CLAIM = ("the note's finding is that LR x steps-to-transfer is *not constant* across LRs: an N-times lower LR run "
         "for 6NS-50NS steps did not transfer where the high LR did in S. That a higher LR transfers in fewer steps "
         "is expected under a 1/LR law too and is not the finding; only the headline verdict \"faster than 1/LR\" "
         "agrees with the note.")
HEADLINE_RULE = (f"per setting, H = the highest LR whose median converged, L = the sweep's lowest LR; a transfer "
                 "by collapse is not the desired behavior transferring, so here it counts as not transferred by its "
                 "step (a lower bound); a seed that transferred by its first checkpoint has steps at most that "
                 "checkpoint's (no fraction of a step is measured), so H there makes (a) a lower bound, L there an "
                 "upper bound, and both leave no numbers. (a) = (L x "
                 "steps_L) / (H x steps_H), steps being the interpolated crossing, or L's own max_steps when L did "
                 "not converge (then a lower bound, `>=`); the note reports 4x-56x, 1 under 1/LR. (b) = the step "
                 "ratio for a 10x LR gap, (steps_L / steps_H) ** (1 / log10(H / L)); 10 under 1/LR. Interval: (a) "
                 "per seed paired across the two LRs, the error rule applied to their median, widened to hold every "
                 "seed's ratio (+inf above a lower bound); (b) follows from (a). Verdict: `faster than 1/LR` when the "
                 "interval of (a) lies above 1, `slower than 1/LR` below 1, `consistent with 1/LR` when it holds 1 "
                 f"and spans at most {CONSISTENT_SPAN:g}x, else `inconclusive at this many seeds`.")


def headline_row(h: Headline) -> dict[str, object]:
    """report.json / W&B row (infinities as null, with lower_bound saying why)."""
    def fin(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else x

    return {"setting": h.setting, "collapsed_transfers": h.collapsed, "high_lr": h.high_lr, "low_lr": h.low_lr,
            "lr_x_steps_ratio": fin(h.lr_ratio),
            "lr_x_steps_ratio_low": fin(h.lr_ratio_low), "lr_x_steps_ratio_high": fin(h.lr_ratio_high),
            "lower_bound": h.lower_bound, "step_ratio_10x": fin(h.step_ratio_10x),
            "step_ratio_10x_low": fin(h.step_ratio_low), "step_ratio_10x_high": fin(h.step_ratio_high),
            "upper_bound": h.upper_bound, "n_seeds": h.n_seeds, "verdict": h.verdict, "reason": h.reason,
            "caveat": h.caveat, "text": headline_text(h)}


def headline_lines(headlines: Sequence[Headline]) -> list[str]:
    """report.md's headline section."""
    lines = ["## The note's headline numbers", "",
             "Source: the per-LR and per-trial tables below. (a) LR x steps of the lowest LR over that of the highest "
             "converged LR (the note: 4x-56x; 1 under a 1/LR law); (b) steps for a 10x LR gap (10 under 1/LR). "
             "Rule under Rules.", ""]
    return lines + [f"- **{headline_text(h)}**" for h in headlines] + [""]
