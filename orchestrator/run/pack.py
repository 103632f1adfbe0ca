"""A pack: K trials of one setting (LRs x seeds, `sweep.pack`) trained together by one trainer group over one copy
of the frozen base (workers/train/pack_train.py), each keeping its own run folder, rows, adapters, W&B run and result.

One Tune trial runs one pack (sweep.trainable) and reports every member's rows, each tagged with its trial's name.
The pack's trainer state is one DeepSpeed checkpoint in sweep_dir/packs/<name>/state (a pack of one keeps it in its
trial folder, as before): a resumed pack restores every member from it, and a member that already has result.json
(stopped early, or closed just before a crash) stays out of the batch. Early stopping closes a member (its
remaining evaluations, result.json) as soon as it fires; the pack trains on with the rest. A member's crash is the
pack's crash: Tune retries the whole pack (sweep.max_retries), which resumes every unfinished member from the pack's
last state, so the members that were fine repeat at most the steps since it, as a lone trial would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.runfiles import SweepDir, trial_name
from orchestrator.plan.resolve import resolve
from orchestrator.run.trial import Trial, TrialContext, trial_spec
from orchestrator.schema import is_auto

PACKS = "packs"  # the sweep folder's packs' trainer states


def pack_size(cfg: Any) -> int:
    """How many trials one pack holds: the one place that reads sweep.pack (`auto`: the plan's K)."""
    pack = resolve(cfg).sweep.pack if is_auto(cfg.sweep.pack) else cfg.sweep.pack  # resolved configs: no re-plan
    return max(1, int(pack))


def group_trials(lrs: list[float], seeds: list[int], k: int,
                 steps: dict[float, int] | None = None) -> list[list[tuple[float, int]]]:
    """The sweep's trials (LR-major, as the grid lists them) in packs of at most k. A pure function of the config,
    so a resumed sweep forms the same packs and finds their states. With per-LR budgets (`steps`: LR -> max_steps,
    orchestrator/budget.py) a pack holds trials of one budget only: its members train in lockstep over one pass
    of the base and checkpoint at the same steps, so trials of different lengths are packed apart."""
    trials = [(float(lr), int(seed)) for lr in lrs for seed in seeds]
    by_budget: dict[int, list[tuple[float, int]]] = {}
    for t in trials:
        by_budget.setdefault(steps[t[0]] if steps else 0, []).append(t)
    return [group[i:i + k] for group in by_budget.values() for i in range(0, len(group), k)]


def pack_name(members: list[tuple[float, int]], sweep_dir: Path | None = None) -> str:
    return f"{trial_name(*members[0], sweep_dir)}_k{len(members)}"


def pack_state_dir(sweep_dir: Path, members: list[tuple[float, int]]) -> Path:
    """Where a pack's trainer state lives: its trial folder's state/ for a pack of one (the unpacked layout)."""
    if len(members) == 1:
        return SweepDir(sweep_dir).trial(*members[0]).state
    return sweep_dir / PACKS / pack_name(members, sweep_dir) / "state"


def _tagged(report: Callable[[str, dict], None], name: str) -> Callable[[dict], None]:
    return lambda row: report(name, row)


class Pack:
    """build -> run -> close for K trials; `report(name, row)` receives each member's checkpoint rows."""

    def __init__(self, ctx: TrialContext, members: list[tuple[float, int]], report: Callable[[str, dict], None],
                 extra: dict[str, Any] | None = None) -> None:
        self.ctx, self.members = ctx, list(members)
        packed = pack_name(self.members, Path(ctx.sweep_dir)) if len(self.members) > 1 else None
        self.trials = [Trial(ctx, lr, seed, _tagged(report, trial_name(lr, seed, ctx.sweep_dir)), extra, pack=packed)
                       for lr, seed in self.members]
        self.state_dir = pack_state_dir(Path(ctx.sweep_dir), self.members)
        self.timings: dict[str, float] = {}  # the trainer's, shared by the members
        self.active: list[bool] = []

    def build(self) -> None:
        from workers.train.state import read_resume_point

        self.active = [not t.files.finished() for t in self.trials]
        for trial, active in zip(self.trials, self.active, strict=True):
            if active:
                trial.write_config()
        point = read_resume_point(self.state_dir)
        resumed_from = point["step"] if point else None
        for trial, active in zip(self.trials, self.active, strict=True):
            if active:
                trial.build(resumed_from)

    def run(self) -> list[dict[str, Any]]:
        """Build, train, close; returns the members' results (those finished before this run: None)."""
        open_trials = []
        try:
            self.build()
            open_trials = [t for t, a in zip(self.trials, self.active, strict=True) if a]
            self.train()
            for i, trial in enumerate(self.trials):
                if self.active[i]:
                    trial.close(self.timings)
        except BaseException as err:
            for trial in open_trials:
                if trial.result is None:
                    trial.fail(err)
            raise
        return [t.result for t in self.trials]

    def train(self) -> None:
        from workers.labels.teacher import read_labels

        examples = read_labels(Path(self.ctx.labels_path))
        if len(self.trials) == 1:
            from workers.train.trainer import train

            t = self.trials[0]
            train(t.spec, examples, t.dir, t.on_checkpoint, should_stop=t.poll if t.early_stopping else None,
                  timings=self.timings, after_checkpoint=self.wait_for_samples if self.pauses else None)
            return
        from workers.train.pack_train import train_pack

        stopping = any(t.early_stopping for t in self.trials)
        train_pack([t.spec for t in self.trials], examples, [t.dir for t in self.trials], self.state_dir,
                   [t.on_checkpoint for t in self.trials], active=self.active,
                   should_drop=self.drops if stopping else None, timings=self.timings,
                   after_checkpoint=self.wait_for_samples if self.pauses else None)

    @property
    def pauses(self) -> bool:
        """The sampler sleeps on the trainers' GPUs (the plan's sample.engine.sleep): the trainers pause at each
        checkpoint until its samples are back, so the woken engine and the next step never hold the GPUs at once."""
        return self.ctx.sample.engine.sleep is True

    def wait_for_samples(self, step: int) -> None:
        """After a checkpoint's hooks (every member's request already sent; the sampler actor takes them one call
        at a time): block until each open member's evaluations are graded."""
        for trial, active in zip(self.trials, self.active, strict=True):
            if active:
                trial.drain(block=True)

    def drops(self, step: int) -> list[int]:
        """The members early stopping ends after `step`: each is closed now (result.json), the rest train on."""
        out = []
        for i, trial in enumerate(self.trials):
            if self.active[i] and trial.early_stopping and trial.poll(step):
                self.active[i] = False
                trial.close(self.timings)
                out.append(i)
        return out


def follow_pack(ctx: TrialContext, members: list[tuple[float, int]]) -> None:
    """A trainer rank other than 0 of a multi-worker pack: trains its share; rank 0 (Pack.run) does the rest."""
    from workers.labels.teacher import read_labels

    examples = read_labels(Path(ctx.labels_path))
    specs = [trial_spec(ctx, lr, seed) for lr, seed in members]
    dirs = [SweepDir(Path(ctx.sweep_dir)).trial(lr, seed).path for lr, seed in members]
    if len(members) == 1:
        from workers.train.trainer import train

        train(specs[0], examples, dirs[0], lambda *_: None)
        return
    from workers.train.pack_train import train_pack

    train_pack(specs, examples, dirs, pack_state_dir(Path(ctx.sweep_dir), members),
               [lambda *_: None for _ in members])
