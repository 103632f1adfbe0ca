"""Per-LR step budgets: how many steps each LR of a sweep trains (the note's design, docs/design.md).

The note ran its low LRs far longer than its high ones (6NS to 50NS steps for an N times lower LR), so that the
LR x steps chart can show whether LR x steps-to-transfer is constant. One budget for every LR cannot: the low LRs'
bars are then lower bounds below the high LRs' converged bars by construction. Three ways to give the steps:

    sweep.max_steps only           every LR trains max_steps (the toy's grid)
    sweep.lr_steps_budget=B        each LR trains ceil(B / lr) steps, at most max_steps (a budget in LR x steps)
    sweep.steps_per_lr=[...]       one count per LR, in sweep.lrs' order (at most max_steps)

Early stopping at transfer (sweep.early_stop) keeps the high LRs cheap whatever their budget. Pure: a plain
function of the sweep block (a typed SweepConfig or the `sweep:` mapping of a sweep's config.yaml).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from eval.metrics import checkpoint_steps


def _field(sweep: Any, name: str, default: Any = None) -> Any:
    if isinstance(sweep, Mapping):
        return sweep.get(name, default)
    return getattr(sweep, name, default)


def trial_max_steps(sweep: Any, lr: float) -> int:
    """The steps the trials of `lr` train: steps_per_lr's entry, else ceil(lr_steps_budget / lr), each capped at
    max_steps; max_steps when neither is set."""
    cap = int(_field(sweep, "max_steps"))
    per_lr = list(_field(sweep, "steps_per_lr") or [])
    lrs = [float(x) for x in _field(sweep, "lrs") or []]
    if per_lr and float(lr) in lrs:
        return min(cap, int(per_lr[lrs.index(float(lr))]))
    budget = _field(sweep, "lr_steps_budget")
    if budget is None or per_lr or not float(lr) > 0:  # an LR outside the grid (`train --lr`): the cap
        return cap
    # the small tolerance keeps a budget that is an exact multiple (0.064 / 1e-3) from rounding up a step
    return max(1, min(cap, math.ceil(float(budget) / float(lr) - 1e-9)))


def trial_fields(sweep: Any, lr: float, seed: int) -> dict[str, Any]:
    """A trial's own TrainSpec fields: its LR, data seed (the trial's seed: the order of its batches), init seed
    (LoRA init and torch's seed: sweep.init_seed, or the trial's seed when that is null), steps and checkpoints."""
    steps = trial_max_steps(sweep, lr)
    init = _field(sweep, "init_seed")
    return {"lr": lr, "seed": seed, "init_seed": seed if init is None else int(init), "max_steps": steps,
            "checkpoint_steps": checkpoint_steps(steps, int(_field(sweep, "checkpoints_per_octave", 1) or 1))}


def varied_seeds(sweep: Any) -> str:
    """Which seeds the sweep's seed list varies (config.json's `seed_varies`)."""
    return "data_seed" if _field(sweep, "init_seed") is not None else "data_seed+init_seed"


def steps_by_lr(sweep: Any) -> dict[float, int]:
    """Every LR of the sweep -> its trials' step count."""
    return {float(lr): trial_max_steps(sweep, lr) for lr in _field(sweep, "lrs")}


def steps_of_trials(sweep: Any, sweep_dir: Any = None) -> dict[str, int]:
    """Every trial's name -> its max_steps (the progress table's and `status`'s step/max_steps)."""
    from eval.runfiles import trial_name

    return {trial_name(lr, seed, sweep_dir): n
            for lr, n in steps_by_lr(sweep).items() for seed in _field(sweep, "seeds")}


def pack_budgets(sweep: Any, k: int) -> list[int]:
    """The step count of each pack of at most k trials, as orchestrator/run/pack.py groups them (one budget a pack)."""
    trials = [trial_max_steps(sweep, lr) for lr in _field(sweep, "lrs") for _ in _field(sweep, "seeds")]
    return [n for n in dict.fromkeys(trials) for _ in range(math.ceil(trials.count(n) / k))]


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of jobs run `slots` at a time, each starting on the first free slot, longest first."""
    free = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        free[free.index(min(free))] += d
    return max(free)


def budget_errors(sweep: Any) -> list[str]:
    """What is wrong with the step budget settings, each naming its fix (empty: fine)."""
    errors = []
    per_lr, budget, lrs = list(_field(sweep, "steps_per_lr") or []), _field(sweep, "lr_steps_budget"), \
        list(_field(sweep, "lrs"))
    if per_lr and budget is not None:
        errors.append("sweep.steps_per_lr and sweep.lr_steps_budget are both set: give one (steps_per_lr=[] or "
                      "lr_steps_budget=null)")
    if per_lr and len(per_lr) != len(lrs):
        errors.append(f"sweep.steps_per_lr has {len(per_lr)} entries for {len(lrs)} LRs {lrs}: give one step count "
                      "per LR, in sweep.lrs' order")
    if any(int(s) < 1 for s in per_lr):
        errors.append(f"sweep.steps_per_lr={per_lr}: every count must be >= 1")
    if budget is not None and not float(budget) > 0:
        errors.append(f"sweep.lr_steps_budget={budget}: must be > 0 (LR x steps, e.g. 0.064 gives lr 1e-3 64 steps)")
    return errors


def describe(sweep: Any) -> str:
    """One line for the sweep's start-up log and the dry run: each LR's steps."""
    by_lr = steps_by_lr(sweep)
    if len(set(by_lr.values())) == 1:
        return f"{next(iter(by_lr.values()))} steps each"
    return "steps per LR " + ", ".join(f"{lr:g}: {n}" for lr, n in by_lr.items())
