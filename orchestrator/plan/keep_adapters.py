"""Which checkpoint adapters a trial keeps on disk (`sweep.keep_adapters`), and the pruning that applies it.

    all              every checkpoint's adapter (the local default: cheap for small models)
    around_transfer  the transfer checkpoint and the one before it (where `recover` and a closer look start), and
                     the latest; before the transfer, the latest two (the Slurm default: a 235B expert adapter is
                     2.5 GB, x 10 checkpoints x each trial)
    last             the latest only
    auto             all on cluster.kind=local, around_transfer on slurm

Pruning runs after a checkpoint's evaluation (its samples and rows are written): an adapter is deleted only once
its step has an eval row and nothing queued still reads it. Resume needs no adapter (it restarts from the trainer
state, and re-sends only checkpoints without an eval row, whose adapters are never pruned).
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Sequence
from pathlib import Path

from eval.runfiles import TrialDir

POLICIES = ("all", "around_transfer", "last")
CLUSTER_DEFAULT = {"local": "all", "slurm": "around_transfer"}
KEPT_AT_MOST = {"around_transfer": 3, "last": 1}  # adapters per trial at the end, for the plan's disk price


def resolve_policy(policy: str, cluster_kind: str) -> str:
    return CLUSTER_DEFAULT.get(cluster_kind, "all") if policy == "auto" else policy


def adapters_to_keep(policy: str, evaluated: Sequence[tuple[int, float]], threshold: float) -> set[int]:
    """The steps whose adapters stay, of the evaluated (step, eval attack rate) checkpoints in step order."""
    steps = [step for step, _ in evaluated]
    if policy == "all" or not steps:
        return set(steps)
    keep = {steps[-1]}
    if policy == "around_transfer":
        hit = next((i for i, (_, rate) in enumerate(evaluated) if rate <= threshold), None)
        keep |= set(steps[-2:]) if hit is None else set(steps[max(0, hit - 1):hit + 1])
    return keep


def prune_adapters(trial_dir: Path, policy: str, threshold: float, eval_rows: Sequence[dict],
                   busy: Collection[int] = ()) -> list[int]:
    """Delete the adapters `policy` does not keep among the evaluated checkpoints (never one of `busy` steps, still
    read by a queued evaluation); returns the steps removed."""
    if policy == "all":
        return []
    evaluated = sorted((int(r["step"]), float(r["eval_attack_rate"])) for r in eval_rows
                       if r.get("eval_attack_rate") is not None)
    keep = adapters_to_keep(policy, evaluated, threshold) | set(busy)
    removed = []
    for step, _ in evaluated:
        folder = TrialDir(trial_dir).adapter(step)
        if step not in keep and folder.is_dir():
            doomed = folder.with_name(f".pruned-{folder.name}")  # renamed first: never half an adapter in place
            folder.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(step)
    return removed
