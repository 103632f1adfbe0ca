"""One trial = (setting, lr, seed): train, and evaluate every checkpoint through the sweep's sampler.

Sampling is asynchronous: after saving a checkpoint the trainer sends its prompts to the vLLM actor
and keeps training; finished evaluations are graded, written and reported in step order.
With early stopping on (sweep.early_stop), the rule of eval/stopping.py is checked on every finished
evaluation; the trial's files then end at the checkpoint it fired on, and result.json says why.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eval.graders import ATTACK, DESIRED, build_grader
from eval.grades import grade_answers
from eval.heartbeat import write_heartbeat
from eval.metrics import coherent_rate, rates
from eval.rows import eval_rows
from eval.runfiles import SweepDir, TrialDir, append_jsonl, read_jsonl, step_of, write_json, write_jsonl
from eval.stopping import StopState
from workers.labels.prompts import Prompt, build_prompts, load_bank, pick, split_bank
from workers.sample.sampler import DeterministicError, request_seed
from workers.train.trainer import TrainSpec, wait_limit_s


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides (lr, seed); plain data, so Ray can ship it."""

    sweep_dir: str
    sweep_id: str
    sampler_name: str
    setting: Any  # SettingConfig
    model_name: str
    train_spec: TrainSpec  # lr and seed are filled per trial
    labels_path: str
    sample: Any  # SampleConfig
    tracker: Any  # TrackerConfig
    threshold: float
    capability: Any = None  # CapabilityConfig with an absolute data_dir, or None
    capability_baseline: dict | None = None  # benchmark -> {"score", "n"} of the model before training
    early_stop: Any = None  # EarlyStopConfig; None or enabled=False: full curves
    placement: Any = None  # orchestrator.placement.TrialPlacement: this trial's trainer workers
    organism_min_train_desired: float = 0.5  # recorded in config.json: eval.analysis reads them from there
    collapse_other_rate: float = 0.5
    keep_adapters: str = "all"  # sweep.keep_adapters, resolved (orchestrator/plan/keep_adapters.py)
    sweep: Any = None  # SweepConfig: each LR's own steps and checkpoints, the init seed (orchestrator/budget.py)


def trial_spec(ctx: TrialContext, lr: float, seed: int) -> TrainSpec:
    """The trial's trainer config; its trainers watch the sweep folder's save request (the Slurm job's warning)."""
    from orchestrator.budget import trial_fields
    from workers.train.state import SAVE_REQUEST

    own = trial_fields(ctx.sweep, lr, seed) if ctx.sweep is not None else {"lr": lr, "seed": seed}
    return replace(ctx.train_spec, **own, save_request_file=str(Path(ctx.sweep_dir) / SAVE_REQUEST))


def eval_prompts(setting: Any, sample: Any) -> tuple[list[Prompt], list[Prompt]]:
    """Fixed prompts for every checkpoint: n eval prompts (held-out questions) and n train prompts."""
    bank = load_bank(setting.questions)
    train_q, eval_q = split_bank(bank, setting.eval_fraction)
    evals = pick(build_prompts(eval_q, setting.eval_template, "eval"), sample.n_eval_prompts, sample.seed)
    trains = pick(build_prompts(train_q, setting.train_template, "train"), sample.n_train_prompts, sample.seed + 1)
    return evals, trains


def grade_checkpoint(prompts: list[Prompt], responses: list[str], grader: Any,
                     cut: list[bool] | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Graded samples and the checkpoint's rates on eval and train prompts; with `cut` (the sampler's
    Completions.cut) each sample says whether it stopped at sample.max_new_tokens, and the row counts them."""
    fields = grade_answers(grader, prompts, responses)
    samples = [
        {"split": p.split, "question_id": p.question_id, "prompt": p.text, "response": r} | f
        for p, r, f in zip(prompts, responses, fields, strict=True)
    ]
    if cut is not None:
        for s, c in zip(samples, cut, strict=True):
            s["cut"] = c
    row: dict[str, Any] = {}
    for split in ("eval", "train"):
        r = rates(s["grade"] for s in samples if s["split"] == split)
        row |= {f"{split}_desired_rate": r[DESIRED], f"{split}_attack_rate": r[ATTACK],
                f"{split}_other_rate": r["other"], f"n_{split}": r["n"],
                f"{split}_coherent_rate": coherent_rate(s["coherent"] for s in samples if s["split"] == split)}
        if cut is not None:  # answers cut at sample.max_new_tokens (may be graded other or wrong)
            row[f"n_{split}_cut"] = sum(s["cut"] for s in samples if s["split"] == split)
    return samples, row | getattr(grader, "last_stats", {})  # e.g. the LLM judge's judge_unparseable count


def reconcile_trial_dir(trial_dir: Path, resumed_from: int | None,
                        checkpoint_steps: list[int] | None = None) -> set[int]:
    """Make the trial folder agree with the trainer state it resumes from; returns evaluated steps.

    Rows and samples past the resume point came from steps the trainer will replay: they are dropped,
    so a restarted trial ends with exactly the rows of an undisturbed one. The resume point may lie between
    checkpoints (state saved on a time interval or a request): the train rows of the steps since the last
    checkpoint are only written at the next one, from the losses the state carries, so those steps' train rows
    that an attempt wrote after the state was saved (it went on to the next checkpoint, then died before saving
    there) are dropped too: the resumed trainer writes them again. With no state at all the trial starts afresh.
    """
    files = TrialDir(trial_dir)
    metrics = files.metrics
    if resumed_from is None:
        for path in (metrics, files.samples_dir, files.adapters):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return set()
    # the train rows the state does not carry end at the last checkpoint at or before the resume point
    carried_after = max((c for c in checkpoint_steps or [] if c <= resumed_from), default=resumed_from)
    rows = [r for r in read_jsonl(metrics)
            if r["step"] <= (carried_after if r["kind"] == "train" else resumed_from)]
    seen, kept = set(), []
    for r in rows:  # keep the first of any duplicate (step, kind, benchmark)
        if (r["step"], r["kind"], r.get("benchmark")) not in seen:
            seen.add((r["step"], r["kind"], r.get("benchmark")))
            kept.append(r)
    write_jsonl(metrics, kept)
    for sample_file in files.samples_dir.glob("step_*.jsonl"):
        if step_of(sample_file) > resumed_from:
            sample_file.unlink()
    return {r["step"] for r in kept if r["kind"] == "eval"}


def checkpoint_train_loss(rows: list[dict[str, Any]], checkpoint_steps: list[int], step: int) -> float | None:
    """The train_loss of checkpoint `step`'s eval row: the mean of the step losses since the previous checkpoint,
    as the trainer computes it, rebuilt from the train rows (in step order) for a checkpoint whose evaluation an
    interrupted attempt lost; None for step 0 or when those rows are missing."""
    previous = max((c for c in checkpoint_steps if c < step), default=step)
    losses = [r["train_loss"] for r in sorted((r for r in rows if r["kind"] == "train"), key=lambda r: r["step"])
              if previous < r["step"] <= step]
    return sum(losses) / len(losses) if len(losses) == step - previous and losses else None


def cut_after_stop(trial_dir: Path, stop_step: int) -> None:
    """Drop rows, samples and adapters past the checkpoint early stopping fired on: the trainer may have run
    a few steps further while that checkpoint was being sampled, but the trial's curve ends where it stopped."""
    files = TrialDir(trial_dir)
    write_jsonl(files.metrics, [r for r in files.rows() if r["step"] <= stop_step])
    for folder in (files.samples_dir, files.adapters):
        for path in folder.glob("step_*"):
            if step_of(path) > stop_step:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


class Trial:
    """One trial's run folder, evaluations and result, whether it trains alone or in a pack (orchestrator/run/pack.py):
    build() (folder made to agree with the trainer state it resumes from, logger, sampler, rule), then the trainer
    calls on_checkpoint and poll, then close() drains the evaluations and writes result.json.

    Sampling is asynchronous: `pending` is the trial's one queue of checkpoint evaluations in flight, finished in
    step order (capability evaluations queue in workers/capability.py behind them)."""

    def __init__(self, ctx: TrialContext, lr: float, seed: int, report: Any, extra: dict[str, Any] | None = None,
                 pack: str | None = None) -> None:
        self.ctx, self.lr, self.seed, self.report, self.extra = ctx, lr, seed, report, extra or {}
        self.began = time.time()
        self.files = SweepDir(Path(ctx.sweep_dir)).trial(lr, seed)
        self.name, self.dir = self.files.name, self.files.path
        self.spec = trial_spec(ctx, lr, seed)
        self.pack = pack
        self.pending: deque[tuple[int, Any, dict[str, Any], float]] = deque()
        self.timing = {"eval_wait_s": 0.0, "grade_s": 0.0}  # waiting for the sampler; grading, writing, reporting
        self.in_training: dict[str, float] | None = None
        self.capability: Any = None
        self.stop: StopState | None = None
        self.result: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        ctx, spec = self.ctx, self.spec
        return ({"name": self.name, "setting": ctx.setting.name, "lr": self.lr, "seed": self.seed,
                 # the note's seeds vary data order only: which of the two this sweep's seed list varied
                 "data_seed": spec.seed, "init_seed": spec.lora_seed,
                 "seed_varies": "data_seed" if spec.init_seed is not None else "data_seed+init_seed",
                "model": ctx.model_name, "max_steps": spec.max_steps, "checkpoint_steps": spec.checkpoint_steps,
                "threshold": ctx.threshold, "organism_min_train_desired": ctx.organism_min_train_desired,
                "collapse_other_rate": ctx.collapse_other_rate, "sweep_id": ctx.sweep_id,
                "num_workers": ctx.placement.num_workers if ctx.placement else 1,
                 "train": spec.record()}
                | ({"pack": self.pack} if self.pack else {}))

    def write_config(self) -> None:
        """config.json first: a trial whose state cannot be read is still listed (as failed) by the analysis."""
        self.trial_info = self.info()
        write_json(self.dir / "config.json", self.trial_info)

    def build(self, resumed_from: int | None) -> None:
        """Folder, logger, sampler handle and stopping rule; then re-sends the evaluations an earlier attempt lost."""
        import ray

        from workers.tracking import TrialLogger

        self.resumed_from = resumed_from
        evaluated = reconcile_trial_dir(self.dir, resumed_from, self.spec.checkpoint_steps)
        append_jsonl(self.files.attempts, {"started": time.time(), "resumed_from": resumed_from})
        ctx = self.ctx
        self.sampler = ray.get_actor(ctx.sampler_name)
        self.grader = build_grader(ctx.setting.grader)
        evals, trains = eval_prompts(ctx.setting, ctx.sample)
        self.prompts = evals + trains
        self.logger = TrialLogger(self.dir, ctx.tracker, group=ctx.sweep_id, name=self.name,
                                  run_config=self.trial_info, tags=[ctx.setting.name, ctx.model_name])
        if ctx.capability is not None and ctx.capability.benchmarks:
            from orchestrator.run.capability_queue import TrialCapability

            self.capability = TrialCapability(ctx.capability, ctx.capability_baseline or {}, self.sampler, self.dir,
                                              self.logger, self.spec.max_steps, ctx.threshold, self.seed)
            self.capability.resume(self.files.rows())
        es = ctx.early_stop if ctx.early_stop is not None and ctx.early_stop.enabled else None
        self.stop = StopState(ctx.threshold, es.k, es.max_rel_degradation, es.wait_below) if es else None
        self.started = time.time()
        self._resend_lost(evaluated)

    def _resend_lost(self, evaluated: set[int]) -> None:
        """Checkpoints saved by an earlier attempt but never evaluated."""
        kept = self.files.rows()
        for step in self.spec.checkpoint_steps:
            if self.resumed_from is not None and step <= self.resumed_from and step not in evaluated:
                adapter = self.files.adapter(step)
                if not (adapter / "adapter_config.json").exists():
                    raise FileNotFoundError(f"{adapter} is missing: delete {self.dir} to restart this trial")
                self.evaluate(step, adapter, {"train_loss": checkpoint_train_loss(kept, self.spec.checkpoint_steps,
                                                                                  step)})

    @property
    def early_stopping(self) -> bool:
        return self.stop is not None

    def _finish(self, step: int, ref: Any, info: dict[str, Any], sent: float) -> None:
        import ray

        if self.stop is not None and not self.stop.keeps(step):
            return  # sampled after the trial's answer was known: not part of its curve
        waited = time.time()
        try:
            done = ray.get(ref)
        except DeterministicError as err:
            err.lrsweep_trial = self.name  # in a pack, only this member gets failed.json
            raise
        graded = time.time()
        self.timing["eval_wait_s"] += graded - waited
        samples, row = grade_checkpoint(self.prompts, done.texts, self.grader, done.cut)
        write_jsonl(self.files.samples(step), samples)
        row = {"step": step, "kind": "eval", "lr": self.lr, "seed": self.seed, "train_loss": info.get("train_loss"),
               "eval_latency_s": round(time.time() - sent, 2)} | row
        self.logger.log(row)
        self.logger.log_samples(step, samples)
        self.report({k: v for k, v in row.items() if v is not None} | {"max_steps": self.spec.max_steps})
        self.timing["grade_s"] += time.time() - graded
        if self.capability is not None:
            self.capability.after_eval(step, row)
        if self.stop is not None:
            self.stop.update(self.files.rows(), step)
        if self.capability is None:  # capability evaluations read adapters later: those prune at close()
            self.prune_adapters()

    def prune_adapters(self) -> None:
        """sweep.keep_adapters: delete the evaluated checkpoints' adapters it does not keep."""
        from orchestrator.plan.keep_adapters import prune_adapters

        busy = {step for step, *_ in self.pending}
        prune_adapters(self.dir, self.ctx.keep_adapters, self.ctx.threshold,
                       eval_rows(self.files.rows()), busy)

    def drain(self, block: bool) -> None:
        import ray

        if self.capability is not None:
            self.capability.drain(block=False)
        while self.pending:
            waited = time.time()
            limit = wait_limit_s(self.spec.train.collective_timeout_s)
            ready, _ = ray.wait([self.pending[0][1]], timeout=limit if block else 0)
            self.timing["eval_wait_s"] += time.time() - waited
            if block and not ready:
                raise TimeoutError(f"{self.name}: step {self.pending[0][0]}'s samples took over {limit:.0f} s; the "
                                   "other trainer ranks would hit their collective timeout (train.collective_"
                                   f"timeout_s={self.spec.train.collective_timeout_s:g}): raise it, or check the "
                                   "sampler's log")
            if not ready:
                return
            self._finish(*self.pending.popleft())

    def poll(self, step: int) -> bool:
        """Asked after every step: has early stopping fired? Waits for the evaluations in flight only when the
        pending one can complete the transfer rule (StopState.wait_for_pending), so the trainer stops exactly
        there instead of training past it while it is sampled."""
        if self.pending:
            self.drain(block=self.stop.wait_for_pending(self.files.rows()))
        return self.stop.fired

    def evaluate(self, step: int, adapter: Path, info: dict[str, Any]) -> None:
        s = self.ctx.sample
        ref = self.sampler.complete.remote(str(adapter), [p.text for p in self.prompts], s.max_new_tokens,
                                           s.temperature, s.top_p, request_seed(s.seed, self.seed, step))
        self.pending.append((step, ref, info, time.time()))
        self.drain(block=False)

    def on_checkpoint(self, step: int, adapter: Path, info: dict[str, Any]) -> None:
        first = step - len(info.get("step_losses", [])) + 1
        for i, loss in enumerate(info.get("step_losses", [])):
            self.logger.log({"step": first + i, "kind": "train", "train_loss": loss})
        self.evaluate(step, adapter, info)

    def close(self, trainer: dict[str, float]) -> dict[str, Any]:
        """After its last step (or its drop from a pack): the remaining evaluations, the cut at an early stop,
        the W&B summary, result.json."""
        self.in_training = dict(self.timing)
        last = int(trainer.get("last_step", 0))
        write_heartbeat(self.dir, last, phase="evaluating", max_steps=self.spec.max_steps)
        stop = self.stop
        if stop is not None:
            stop.close(last, self.spec.max_steps)
        self.drain(block=True)
        if self.capability is not None:
            self.capability.drain(block=True)
        if stop is not None and stop.fired:
            cut_after_stop(self.dir, stop.step)
            self.logger.log({"step": stop.step, "kind": "stop", "reason": stop.reason, "steps_trained": last})
        self.prune_adapters()
        self.logger.set_summary(run_summary(self.trial_info, self.files.rows()))
        ended = time.time()
        self.logger.finish()
        done = time.time()
        self.result = {
            "done": True, "wall_s": round(done - self.began, 2), "started": round(self.began, 2),
            "ended": round(done, 2), "resumed_from": self.resumed_from, "steps_trained": trainer.get("last_step"),
            "stopped_early": bool(stop and stop.fired), "stop_reason": stop.reason if stop else None,
            "stop_step": stop.step if stop else None,
            "timing": trial_timing(self.started - self.began, trainer, self.timing, self.in_training,
                                   done - ended, done - self.began),
            **self.extra}
        write_json(self.files.result, self.result)
        return self.result

    def fail(self, err: BaseException) -> None:
        """The trial's end on an error: failed.json for one a retry would repeat (sweep.trainable ends the trial
        without a retry), and the W&B run closed."""
        if isinstance(err, DeterministicError) and getattr(err, "lrsweep_trial", self.name) == self.name:
            cause = getattr(err, "cause", err)  # Ray wraps an actor's error; its cause holds the message
            write_json(self.files.failed, {"error": type(cause).__name__, "message": str(cause),
                                           "deterministic": True, "at": round(time.time(), 2)})
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.finish()


SUMMARY_KEYS = ("status", "steps_to_transfer", "steps_to_transfer_text", "converged", "lower_bound", "lr_x_steps",
                "lr_x_steps_is_lower_bound", "lr", "seed", "stopped_early", "stop_reason", "collapse",
                "collapse_reason", "initial_attack_rate", "final_attack_rate", "transfer_eval_desired_rate",
                "transfer_eval_other_rate")


def run_summary(trial_info: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial's W&B run summary: its outcome as summary.json states it (eval.analysis, the same per-trial
    analysis), so W&B's runs table compares LRs without the separate report run."""
    from eval.analysis import analyze_trial
    from eval.summary import trial_summary

    row = trial_summary(analyze_trial(trial_info, rows, float(trial_info["threshold"]), finished=True))
    return {k: row[k] for k in SUMMARY_KEYS} | {"setting": trial_info["setting"], "model": trial_info["model"]}


def trial_timing(setup: float, trainer: dict[str, float], timing: dict[str, float], in_training: dict[str, float],
                 teardown: float, wall: float) -> dict[str, float]:
    """Where a trial's wall time went (seconds); the parts add up to wall_s, with `other_s` the rest.

    eval_handoff_s is the trainer's time in the checkpoint hook and the per-step poll that was not spent
    waiting for the sampler or grading: logging train rows and sending the request."""
    hooks = trainer.get("hook_s", 0.0) + trainer.get("poll_s", 0.0)
    parts = {
        "trial_setup_s": setup, "trainer_setup_s": trainer.get("setup_s", 0.0),
        "train_steps_s": trainer.get("train_steps_s", 0.0), "checkpoint_save_s": trainer.get("checkpoint_save_s", 0.0),
        "eval_handoff_s": max(0.0, hooks - in_training["eval_wait_s"] - in_training["grade_s"]),
        "eval_wait_s": timing["eval_wait_s"], "grade_s": timing["grade_s"], "teardown_s": teardown,
    }
    parts["other_s"] = max(0.0, wall - sum(parts.values()))
    return {k: round(v, 3) for k, v in parts.items()}
