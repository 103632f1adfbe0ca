"""The note's paired comparison: a high-LR checkpoint T against each k-times-smaller LR at step k*T, from the
per-trial analyses of eval.analysis.

T is the note's "reasonably large" checkpoint: the latest transferred checkpoint of the reference LR whose
capability degradation is within the limit, judged by the upper end of its interval (or --ref-lr/--ref-step).
Each lower LR is read at the first checkpoint at or after k*T, never before (reading earlier would give the low
LR fewer LR x steps than the high one, which favours the note); `ratio` is the step actually read over k*T.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eval.analysis import NOT_AN_ORGANISM, TrialAnalysis, is_collapse, rate_interval

T_GUARDRAIL = "T: the latest transferred checkpoint within the capability guardrail"
T_UNCHECKED = "T chosen without a capability check"
T_GIVEN = "T given by --ref-lr/--ref-step"


@dataclass(frozen=True)
class PairedRow:
    """One bar of the paired comparison: the trial's eval desired rate at the checkpoint closest to k*T."""

    setting: str
    seed: int
    lr: float
    k: float  # ref_lr / lr (1 for the reference itself)
    target_step: float  # k * T
    step: int  # the checkpoint used
    beyond_max_steps: bool  # k*T lies past this trial's max_steps: the read is its last checkpoint, short of k*T
    beyond_last_checkpoint: bool  # k*T lies past the last evaluated checkpoint (differs when the trial stopped early)
    desired_rate: float | None
    desired_low: float | None
    desired_high: float | None
    trial: str
    t_choice: str = T_GUARDRAIL  # how T was chosen: T_GUARDRAIL, T_UNCHECKED or T_GIVEN

    @property
    def ratio(self) -> float | None:
        """The step read over k*T: >= 1 unless k*T lies past the trial's last checkpoint."""
        return self.step / self.target_step if self.target_step > 0 else None


def eligible_steps(t: TrialAnalysis, threshold: float, capability: Mapping[tuple[str, int], float] | None,
                   max_degradation: float) -> list[int]:
    """Checkpoints that may serve as T: attack rate <= threshold, answers not collapsed (is_collapse) and, when
    capability data is given, a known relative degradation <= max_degradation (a checkpoint with no capability
    entry is not eligible). The capability value is the upper end of the degradation's interval
    (eval.capability.ci), so a checkpoint is within the limit only when its interval is."""
    out = []
    for c in t.curve:
        step = int(c["step"])
        if c["rate"] > threshold or is_collapse(t.desired.get(step), t.other.get(step), t.collapse_other_rate):
            continue
        if capability is not None:
            deg = capability.get((t.name, int(c["step"])))
            if deg is None or deg > max_degradation:
                continue
        out.append(int(c["step"]))
    return out


def first_step_at_or_after(steps: Sequence[int], target: float) -> int:
    """The first checkpoint >= target (with a relative tolerance for k*T's float error); the last checkpoint when
    none is (the read then falls short of target, and the row says so)."""
    later = [s for s in steps if s >= target * (1 - 1e-9)]
    return min(later) if later else max(steps)


def paired_comparison(trials: Sequence[TrialAnalysis], threshold: float, z: float = 1.96,
                      capability: Mapping[tuple[str, int], float] | None = None, max_degradation: float = 0.1,
                      ref_lr: float | None = None, ref_step: int | None = None) -> list[PairedRow]:
    """The note's comparison for one setting: a high-LR checkpoint T vs each k-times-smaller LR at step k*T.

    Reference LR (unless ref_lr is given): the highest LR at which some seed has an eligible checkpoint (see
    eligible_steps; without capability data that is the highest LR that transferred). Pairs are per seed (same
    seed = same data order): T is that seed's latest eligible checkpoint at the reference LR (or ref_step), and each
    lower-LR trial of the same seed is read at the first checkpoint at or after k*T (never before it).
    """
    by_lr: dict[float, dict[int, TrialAnalysis]] = {}
    for t in trials:
        if not t.failed and t.status != NOT_AN_ORGANISM:  # no initial behavior: its step 0 is no reference T
            by_lr.setdefault(t.lr, {})[t.seed] = t

    def chosen_T(t: TrialAnalysis) -> int | None:  # the latest eligible one: the note's "reasonably large" T
        if ref_step is not None:
            return ref_step if ref_step in t.steps else None
        steps = eligible_steps(t, threshold, capability, max_degradation)
        return steps[-1] if steps else None

    if ref_lr is None:
        ref_lr = next((lr for lr in sorted(by_lr, reverse=True)
                       if any(chosen_T(t) is not None for t in by_lr[lr].values())), None)
    if ref_lr is None or ref_lr not in by_lr:
        return []
    choice = T_GIVEN if ref_step is not None else (T_GUARDRAIL if capability is not None else T_UNCHECKED)
    rows = []
    for seed, ref in sorted(by_lr[ref_lr].items()):
        T = chosen_T(ref)
        if T is None:
            continue
        for lr in sorted((lr for lr in by_lr if lr <= ref_lr), reverse=True):
            t = by_lr[lr].get(seed)
            if t is None:
                continue
            k = ref_lr / lr
            target = k * T
            step = T if lr == ref_lr else first_step_at_or_after(t.steps, target)
            rate = t.desired.get(step)
            low, high = rate_interval(rate, t.n_eval, z) if rate is not None else (None, None)
            rows.append(PairedRow(t.setting, seed, lr, k, target, step, target > t.max_steps, target > t.steps[-1],
                                  rate, low, high, t.name, choice))
    return rows
