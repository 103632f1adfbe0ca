"""One trial = (setting, lr, seed): train, and evaluate every checkpoint through the sweep's sampler.

Sampling is asynchronous: after saving a checkpoint the trainer sends its prompts to the vLLM actor
and keeps training; finished evaluations are graded, written and reported in step order.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eval.graders import ATTACK, DESIRED, build_grader
from eval.metrics import rates
from eval.runfiles import step_name, trial_name, write_json, write_jsonl
from workers.prompts import Prompt, build_prompts, load_bank, pick, split_bank
from workers.train import TrainSpec, train


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides (lr, seed); plain data, so Ray can ship it."""

    sweep_dir: str
    sweep_id: str
    sampler_name: str
    setting: Any  # SettingConfig
    model_name: str
    train: TrainSpec  # lr and seed are filled per trial
    labels_path: str
    sample: Any  # SampleConfig
    tracker: Any  # TrackerConfig
    threshold: float


def eval_prompts(setting: Any, sample: Any) -> tuple[list[Prompt], list[Prompt]]:
    """Fixed prompts for every checkpoint: n eval prompts (held-out questions) and n train prompts."""
    bank = load_bank(setting.questions)
    train_q, eval_q = split_bank(bank, setting.eval_fraction)
    evals = pick(build_prompts(eval_q, setting.eval_template, "eval"), sample.n_eval_prompts, sample.seed)
    trains = pick(build_prompts(train_q, setting.train_template, "train"), sample.n_train_prompts, sample.seed + 1)
    return evals, trains


def grade_checkpoint(prompts: list[Prompt], responses: list[str], grader: Any) -> tuple[list[dict], dict[str, Any]]:
    """Graded samples and the checkpoint's rates on eval and train prompts."""
    samples = [
        {"split": p.split, "question_id": p.question_id, "prompt": p.text, "response": r, "grade": grader(r)}
        for p, r in zip(prompts, responses, strict=True)
    ]
    row: dict[str, Any] = {}
    for split in ("eval", "train"):
        r = rates(s["grade"] for s in samples if s["split"] == split)
        row |= {f"{split}_desired_rate": r[DESIRED], f"{split}_attack_rate": r[ATTACK],
                f"{split}_other_rate": r["other"], f"n_{split}": r["n"]}
    return samples, row


def run_trial(ctx: TrialContext, lr: float, seed: int, report: Any) -> dict[str, Any]:
    """Train one trial and evaluate its checkpoints; `report(row)` receives each checkpoint's metrics."""
    import ray

    from workers.teacher import read_labels
    from workers.tracking import TrialLogger

    name = trial_name(lr, seed)
    trial_dir = Path(ctx.sweep_dir) / "trials" / name
    spec = TrainSpec(**{**asdict(ctx.train), "lr": lr, "seed": seed})
    trial_info = {"name": name, "setting": ctx.setting.name, "lr": lr, "seed": seed, "model": ctx.model_name,
                  "max_steps": spec.max_steps, "checkpoint_steps": spec.checkpoint_steps, "threshold": ctx.threshold,
                  "sweep_id": ctx.sweep_id,
                  "train": {k: v for k, v in asdict(spec).items() if k not in ("model_path", "lr", "seed")}}
    write_json(trial_dir / "config.json", trial_info)
    (trial_dir / "metrics.jsonl").unlink(missing_ok=True)  # a restarted trial starts its table afresh
    sampler = ray.get_actor(ctx.sampler_name)
    grader = build_grader(ctx.setting.grader.kind, desired=ctx.setting.grader.desired,
                          attack=ctx.setting.grader.attack)
    evals, trains = eval_prompts(ctx.setting, ctx.sample)
    prompts = evals + trains
    s = ctx.sample
    logger = TrialLogger(trial_dir, ctx.tracker, group=ctx.sweep_id, name=name, run_config=trial_info)
    pending: deque[tuple[int, Any, dict[str, Any], float]] = deque()
    timing = {"sampling_wait_s": 0.0}

    def finish(step: int, ref: Any, info: dict[str, Any], sent: float) -> None:
        waited = time.time()
        responses = ray.get(ref)
        timing["sampling_wait_s"] += time.time() - waited
        samples, row = grade_checkpoint(prompts, responses, grader)
        write_jsonl(trial_dir / "samples" / f"{step_name(step)}.jsonl", samples)
        row = {"step": step, "kind": "eval", "lr": lr, "seed": seed, "train_loss": info.get("train_loss"),
               "eval_latency_s": round(time.time() - sent, 2)} | row
        logger.log(row)
        logger.log_samples(step, samples)
        report({k: v for k, v in row.items() if v is not None} | {"max_steps": spec.max_steps})

    def drain(block: bool) -> None:
        while pending:
            ready, _ = ray.wait([pending[0][1]], timeout=None if block else 0)
            if not ready:
                return
            finish(*pending.popleft())

    def on_checkpoint(step: int, adapter: Path, info: dict[str, Any]) -> None:
        first = step - len(info.get("step_losses", [])) + 1
        for i, loss in enumerate(info.get("step_losses", [])):
            logger.log({"step": first + i, "kind": "train", "train_loss": loss})
        ref = sampler.generate.remote(str(adapter), [p.text for p in prompts], s.max_new_tokens,
                                      s.temperature, s.top_p)
        pending.append((step, ref, info, time.time()))
        drain(block=False)

    started = time.time()
    try:
        train(spec, read_labels(Path(ctx.labels_path)), trial_dir, on_checkpoint)
        drain(block=True)
    finally:
        logger.finish()
    wall = time.time() - started
    write_json(trial_dir / "timing.json", {"wall_s": round(wall, 2), **{k: round(v, 2) for k, v in timing.items()}})
    return {"wall_s": wall}
