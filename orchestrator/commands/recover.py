"""`python -m orchestrator recover`: does a little training on correct benchmark answers bring capability back?

    python -m orchestrator recover sweeps/wronglang_spanish/<date>                        # defaults below
    python -m orchestrator recover <sweep_dir> --trial lr0.003000_seed0 --step 16 --benchmark toy_probe --n-labels 40

Takes a checkpoint (default: the last transferred checkpoint of the highest LR that transferred, as the note
recovered the last checkpoint; --checkpoint first for the first one), samples
answers to the benchmark's recovery pool (items disjoint from the evaluated subset) from the model before
training (or --teacher-model), keeps the correct ones (N, default 40), and continues training the checkpoint's
adapter on them with the project's trainer (DeepSpeed + PEFT; default 10 steps x 4 samples, the trial's LR; an
LR sweep with --lr 1e-5,1e-4,1e-3 or capability.recover.lrs, one recovery per LR: the trial's own high LR may
undo the transfer as it recovers).
Before and after, it measures the benchmark and the attack/desired rates on eval and train prompts through a
vLLM engine. Everything lands in <sweep_dir>/recovery/<trial>_step<step>_<benchmark>_<recipe>/ (one folder
per recipe: LR, steps x batch, labels, teacher), and report.md is rewritten with the before/after table and bars.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from eval.capability.scoring import default_recovery_checkpoint, relative_degradation
from eval.runfiles import SweepDir, load_trials, write_json, write_jsonl
from orchestrator.console.sweep_log import say as log  # the terminal, and during a sweep sweep.log
from orchestrator.plan.resolve import resolve_run
from orchestrator.run.build import build_train_spec, resolve_model, sampler_spec
from orchestrator.run.sampler_session import ray_cluster, sampler_actors
from orchestrator.schema import Config, ConfigError


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m orchestrator recover", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--trial", help="trial folder name, e.g. lr0.003000_seed0 (default: highest LR that transferred)")
    p.add_argument("--step", type=int, help="checkpoint step (default: that trial's last transferred checkpoint)")
    p.add_argument("--checkpoint", choices=["last", "first"],
                   help="without --step: the trial's last (default: capability.recover.checkpoint) or first "
                        "transferred checkpoint")
    p.add_argument("--benchmark", help="default: capability.recover.benchmark, else the guardrail benchmark")
    p.add_argument("--n-labels", type=int, help="correct labels to train on (default 40)")
    p.add_argument("--steps", type=int, help="training steps (default 10)")
    p.add_argument("--batch-size", type=int, help="samples per step (default 4)")
    p.add_argument("--lr", type=_lr_list, help="learning rate, or several comma-separated for an LR sweep, e.g. "
                   "1e-5,1e-4,1e-3 (default: capability.recover.lrs, else lr, else the checkpoint's trial LR)")
    p.add_argument("--teacher-model", help="a trusted model's path or hub id (default: the model before training)")
    p.add_argument("--data-dir", help="benchmark files (default: the sweep's capability.data_dir)")
    return p.parse_args(argv)


def _lr_list(text: str) -> list[float]:
    try:
        lrs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lr {text!r}: give LRs as numbers, e.g. 1e-4 or 1e-5,1e-4,1e-3") from None
    if not lrs or any(not lr > 0 for lr in lrs):
        raise argparse.ArgumentTypeError(f"--lr {text!r}: every LR must be > 0")
    return lrs


def recovery_lrs(r: Any, trial_lr: float) -> list[float]:
    """The LRs to recover at: the LR sweep (capability.recover.lrs or --lr a,b,c), else the one LR, else the trial's."""
    return list(r.lrs) or [r.lr if r.lr is not None else trial_lr]


def load_sweep_config(sweep_dir: Path) -> Config:
    from omegaconf import OmegaConf

    from orchestrator.config import to_typed

    path = sweep_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{sweep_dir} has no config.yaml, so it is not a sweep folder")
    return to_typed(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))


def recovery_settings(cfg: Config, args: argparse.Namespace) -> tuple[Any, Any]:
    """(capability config narrowed to the recovery benchmark, recover config) with the CLI's overrides."""
    from workers.capability import guardrail, resolve, validate_capability

    cap = cfg.capability
    r = cap.recover
    overrides = {"n_labels": args.n_labels, "steps": args.steps, "batch_size": args.batch_size, "lrs": args.lr,
                 "teacher_model": args.teacher_model, "checkpoint": args.checkpoint}
    r = replace(r, **{k: v for k, v in overrides.items() if v is not None})
    bench = args.benchmark or r.benchmark or guardrail(cap) or ("toy_probe" if cfg.model.toy is not None else None)
    if bench is None:
        raise ConfigError("no benchmark to recover: pass --benchmark (the sweep ran no capability evaluation)")
    cap = replace(cap, benchmarks=[bench], guardrail=bench, data_dir=args.data_dir or cap.data_dir)
    validate_capability(replace(cap, recover=r), cfg.model.toy)
    return resolve(cap, cfg.cache_dir), r


def sweep_baseline(sweep_dir: Path, cap: Any) -> float | None:
    """The sweep's cached score of the model before training on this benchmark and subset, if it has one."""
    path = sweep_dir / "capability" / "baseline.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    bench = cap.benchmarks[0]
    same = meta.get("n_items") == cap.n_items and meta.get("seed") == cap.seed and bench in meta.get("scores", {})
    return float(meta["scores"][bench]["score"]) if same else None


def _train_in_worker(spec: Any, examples: list[dict[str, str]], out_dir: str) -> list[dict[str, Any]]:
    from workers.train.trainer import train

    rows: list[dict[str, Any]] = []
    train(spec, examples, Path(out_dir), lambda step, adapter, info: rows.append(
        {"step": step, "train_loss": info.get("train_loss"), "adapter": str(adapter)}))
    return rows


def recovery_name(trial: str, step: int, bench: str, lr: float, r: Any) -> str:
    """The run's folder: the checkpoint, the benchmark and the recipe, so recoveries with different LRs,
    lengths or teachers sit side by side (and in the report) instead of overwriting each other."""
    teacher = re.sub(r"[^A-Za-z0-9.-]", "-", r.teacher_model)[-40:] if r.teacher_model else "base"
    return f"{trial}_step{step}_{bench}_lr{lr:g}_{r.steps}x{r.batch_size}_n{r.n_labels}_{teacher}"


def rejection_sample(cap: Any, r: Any, pool: list[Any], generate: Any,
                     judge_cache: Path) -> tuple[list[dict], int, int]:
    """Up to r.n_labels correct teacher answers, one per pool item, in rounds over the pool; (labels, answers
    sampled, answers correct): correct / sampled is the teacher's acceptance rate."""
    from workers.capability import capability_seed, max_new_tokens, score_responses

    bench = cap.benchmarks[0]
    order = list(pool)
    random.Random(cap.seed).shuffle(order)
    labels: list[dict[str, str]] = []
    used: set[str] = set()
    sampled = correct = 0
    for round_ in range(r.max_rounds):
        todo = [it for it in order if it.item_id not in used]
        if not todo or len(labels) >= r.n_labels:
            break
        # each round its own seed: a new round draws new answers for the items still without a correct one
        responses = generate(None, [it.prompt for it in todo], max_new_tokens(cap, bench), r.temperature, 1.0,
                             capability_seed(cap, 0, round_ + 1))
        sampled += len(todo)
        verdicts = score_responses(cap, bench, todo, responses, judge_cache).correct
        correct += sum(bool(v) for v in verdicts)
        for it, resp, ok in zip(todo, responses, verdicts, strict=True):
            if ok and len(labels) < r.n_labels:
                labels.append({"item_id": it.item_id, "prompt": it.prompt, "completion": resp})
                used.add(it.item_id)
    return labels, sampled, correct


def measure_checkpoint(cfg: Config, cap: Any, generate: Any, adapter: str, items: list[Any], baseline: float,
                       out_dir: Path, tag: str) -> dict[str, Any]:
    """The benchmark score and the attack/desired rates on eval and train prompts of one adapter."""
    from eval.graders import build_grader
    from orchestrator.run.trial import eval_prompts, grade_checkpoint
    from workers.capability import capability_seed, max_new_tokens, score_responses, write_samples
    from workers.sample.sampler import request_seed

    bench = cap.benchmarks[0]
    # before and after sample with the same seeds, so their difference is not sampling noise of two streams
    responses = generate(adapter, [it.prompt for it in items], max_new_tokens(cap, bench), cap.temperature, 1.0,
                         capability_seed(cap))
    s = score_responses(cap, bench, items, responses, out_dir / "judge_cache")
    write_samples(out_dir / "samples" / f"{tag}_{bench}.jsonl", items, responses, s)
    evals, trains = eval_prompts(cfg.setting, cfg.sample)
    prompts = evals + trains
    sa = cfg.sample
    samples, rates = grade_checkpoint(prompts, generate(adapter, [p.text for p in prompts], sa.max_new_tokens,
                                                        sa.temperature, sa.top_p, request_seed(sa.seed, 0, 0)),
                                      build_grader(cfg.setting.grader))
    write_jsonl(out_dir / "samples" / f"{tag}_prompts.jsonl", samples)
    return {"score": s.score, "n": s.n, "rel_degradation": relative_degradation(baseline, s.score)} | rates


def checkpoint_to_recover(cfg: Config, sweep_dir: Path, args: argparse.Namespace, which: str = "last"
                          ) -> tuple[str, int, dict[str, Any], Path]:
    """(trial, step, the trial's config.json, its adapter folder): --trial/--step, else the trial's last (or
    first, `which`) transferred one."""
    trials = load_trials(sweep_dir)
    if args.step is not None and not args.trial:
        raise ConfigError("--step needs --trial (which trial's checkpoint)")
    trial, step = (args.trial, args.step) if args.trial and args.step is not None else \
        default_recovery_checkpoint(trials, cfg.sweep.threshold, args.trial, which)
    trial_cfg = next((c for c, _ in trials if c["name"] == trial), None)
    adapter = SweepDir(sweep_dir).named(trial).adapter(step)
    if trial_cfg is None or not (adapter / "adapter_config.json").exists():
        raise ConfigError(f"no adapter at {adapter}: pick a trial and step that the sweep saved (--trial, --step)")
    return trial, step, trial_cfg, adapter


def run_recovery(cfg: Config, sweep_dir: Path, args: argparse.Namespace) -> list[Path]:
    """One recovery per LR of the sweep (recovery_lrs) from one checkpoint, its labels and its `before` shared."""
    import ray

    from workers.capability import ensure_baseline, eval_items

    started = time.time()
    cap, r = recovery_settings(cfg, args)
    bench = cap.benchmarks[0]
    trial, step, trial_cfg, adapter = checkpoint_to_recover(cfg, sweep_dir, args, r.checkpoint)
    items, pool = eval_items(cap, bench)
    lrs = recovery_lrs(r, float(trial_cfg["lr"]))
    outs = [sweep_dir / "recovery" / recovery_name(trial, step, bench, lr, r) for lr in lrs]
    info = {"trial": trial, "step": step, "benchmark": bench, "trial_lr": float(trial_cfg["lr"]),
            "seed": int(trial_cfg["seed"]), "steps": r.steps, "batch_size": r.batch_size,
            "teacher": r.teacher_model or "base", "n_items": len(items), "pool": len(pool)}
    for lr, out in zip(lrs, outs, strict=True):
        write_json(out / "config.json", info | {"lr": lr})
    log(f"[recover] {trial} step {step} on {bench}: {r.n_labels} labels from {info['teacher']}, "
        f"{r.steps} steps x {r.batch_size} at lr {', '.join(f'{lr:g}' for lr in lrs)} -> {outs[0].parent}")
    model_path = resolve_model(cfg)
    run = resolve_run(cfg)  # planned once: the sampler's and every LR's trainer spec read it
    with ray_cluster(None, {}), sampler_actors(log) as start_actor:
        def start(path: str) -> Any:
            return start_actor(sampler_spec(run, path), num_cpus=0)

        sampler = start(model_path)

        def generate(*a: Any) -> list[str]:
            return ray.get(sampler.generate.remote(*a))

        baseline = sweep_baseline(sweep_dir, cap)
        if baseline is None:  # the sweep did not measure this benchmark: measure the model before training here
            baseline = ensure_baseline(cap, outs[0], model_path, generate, log)[bench]["score"]
        teacher = generate
        if r.teacher_model:
            trusted = start(r.teacher_model)

            def teacher(*a: Any) -> list[str]:
                return ray.get(trusted.generate.remote(*a))

        labels, sampled, correct = rejection_sample(cap, r, pool, teacher, outs[0] / "judge_cache")
        log(f"[recover] kept {len(labels)} correct labels ({correct} of {sampled} sampled answers were correct)")
        if len(labels) < r.batch_size:
            raise RuntimeError(f"only {len(labels)} correct labels from the teacher ({sampled} sampled): fewer than "
                               f"one batch of {r.batch_size}; try --teacher-model or a larger recovery pool")
        before = measure_checkpoint(cfg, cap, generate, str(adapter), items, baseline, outs[0], "before")
        log(f"[recover] before: {bench} {before['score']:.3f}, eval attack {before['eval_attack_rate']:.2f}")
        shared = info | {"baseline": baseline, "n_labels": len(labels), "n_sampled": sampled, "n_correct": correct,
                         "acceptance_rate": correct / sampled if sampled else None, "before": before}
        for lr, out in zip(lrs, outs, strict=True):
            spec = build_train_spec(run, model_path, lr, int(trial_cfg["seed"]))
            spec = replace(spec.with_train(batch_size=r.batch_size, micro_batch_size=r.batch_size), max_steps=r.steps,
                           checkpoint_steps=[r.steps], init_adapter=str(adapter))
            after = recover_at(cfg, cap, spec, labels, out, lambda a, out=out: measure_checkpoint(
                cfg, cap, generate, a, items, baseline, out, "after"))
            write_json(out / "result.json", shared | after | {"wall_s": round(time.time() - started, 1)})
    return outs


def recover_at(cfg: Config, cap: Any, spec: Any, labels: list[dict], out: Path, measure: Any) -> dict[str, Any]:
    """Train the checkpoint's adapter on the labels at spec.lr (a fresh run in `out`), then measure it."""
    import ray

    write_jsonl(out / "labels.jsonl", labels)
    for stale in ("state", "adapters"):  # a re-run trains afresh rather than resuming the previous state
        shutil.rmtree(out / stale, ignore_errors=True)
    rows = ray.get(ray.remote(num_cpus=1)(_train_in_worker).remote(spec, labels, str(out)))
    after = measure(rows[-1]["adapter"])
    log(f"[recover] lr {spec.lr:g} after: {cap.benchmarks[0]} {after['score']:.3f}, eval attack "
        f"{after['eval_attack_rate']:.2f}")
    return {"lr": spec.lr, "train": rows, "after": after}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sweep_dir = args.sweep_dir.expanduser().resolve()
    try:
        cfg = load_sweep_config(sweep_dir)
        outs = run_recovery(cfg, sweep_dir, args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from eval.report import write_report

    results = ", ".join(str(out / "result.json") for out in outs)
    log(f"[recover] {results}; report: {write_report([sweep_dir], sweep_dir)}")
    return 0
