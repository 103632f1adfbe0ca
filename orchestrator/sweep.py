"""The sweep: build the model organism, label, start Ray and one vLLM engine, run every trial, summarise.

    python -m orchestrator sweep setting=wronglang_spanish [sweep.lrs=[1e-4,1e-3] sweep.seeds=[0,1] ...]
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from eval.metrics import format_table, summarize_trial
from eval.plots import plot_curves
from eval.runfiles import load_trials, write_json, write_text_atomic
from orchestrator.config import settings_for_toy
from orchestrator.schema import Config
from orchestrator.trial import TrialContext, run_trial
from workers.sampler import SamplerSpec
from workers.teacher import ensure_labels
from workers.tracking import resolve_wandb_mode
from workers.train import build_train_spec


def log(msg: str) -> None:
    print(msg, flush=True)


def resolve_model(cfg: Config) -> str:
    """The base model's path: the cached toy (built on first use) or the configured path/hub id."""
    if cfg.model.path is None:
        from workers.toy import ensure_toy

        return str(ensure_toy(cfg.model.toy, settings_for_toy(cfg), cfg.cache_dir, log))
    return cfg.model.path


def sampler_spec(cfg: Config, model_path: str) -> SamplerSpec:
    e = cfg.sample.engine
    return SamplerSpec(
        model_path=model_path, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
        max_lora_rank=cfg.train.lora_rank, chat_template_kwargs=dict(cfg.model.chat_template_kwargs),
        gpu_memory_utilization=e.gpu_memory_utilization, cpu_kvcache_space_gib=e.cpu_kvcache_space_gib,
        max_loras=e.max_loras, max_cpu_loras=e.max_cpu_loras, tensor_parallel_size=e.tensor_parallel_size,
        enforce_eager=e.enforce_eager, seed=cfg.sample.seed,
    )


def summarize_sweep(sweep_dir: Path, threshold: float, title: str = "") -> list[dict[str, Any]]:
    """summary.json, the plot and the terminal table, from the run folder alone."""
    summary = [summarize_trial(t, rows, threshold) for t, rows in load_trials(sweep_dir)]
    write_json(sweep_dir / "summary.json", summary)
    if summary:
        plot_curves(summary, threshold, sweep_dir / "attack_rate_vs_step.png", title)
    return summary


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    from ray import tune

    run_trial(ctx, float(config["lr"]), int(config["seed"]), tune.report)


def run_sweep(cfg: Config, sweep_dir: Path) -> list[dict[str, Any]]:
    import ray
    from ray import tune

    from orchestrator.progress import ProgressTable

    started = time.time()
    sweep_dir = sweep_dir.resolve()
    sweep_id = f"{cfg.setting.name}-{sweep_dir.name}"
    resolve_wandb_mode(cfg.tracker.mode)  # refuse online-without-key before any compute
    write_text_atomic(sweep_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    n_trials = len(cfg.sweep.lrs) * len(cfg.sweep.seeds)
    log(f"[sweep] {sweep_id}: {len(cfg.sweep.lrs)} LRs x {len(cfg.sweep.seeds)} seeds = {n_trials} trials, "
        f"{cfg.sweep.max_steps} steps each, batch {cfg.train.batch_size}, LoRA rank {cfg.train.lora_rank}; "
        f"folder {sweep_dir}")
    model_path = resolve_model(cfg)
    labels = ensure_labels(cfg.setting, sweep_dir, log)

    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address=cfg.sweep.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    sampler_name = f"lrsweep-sampler-{os.getpid()}-{int(started)}"
    sampler = None
    try:
        from workers.sampler import Sampler

        log("[sampler] starting one vLLM engine for the whole sweep (multi-LoRA)...")
        sampler = ray.remote(num_cpus=0)(Sampler).options(name=sampler_name).remote(sampler_spec(cfg, model_path))
        ray.get(sampler.ready.remote())
        log(f"[sampler] ready after {time.time() - started:.0f}s")
        ctx = TrialContext(
            sweep_dir=str(sweep_dir), sweep_id=sweep_id, sampler_name=sampler_name, setting=cfg.setting,
            model_name=cfg.model.name, train=build_train_spec(cfg, model_path, 0.0, 0), labels_path=str(labels),
            sample=cfg.sample, tracker=cfg.tracker, threshold=cfg.sweep.threshold,
        )
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {"cpu": cfg.sweep.cpus_per_trial}),
            param_space={"lr": tune.grid_search(list(cfg.sweep.lrs)), "seed": tune.grid_search(list(cfg.sweep.seeds))},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.sweep.max_concurrent_trials, reuse_actors=False),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0,
                                      callbacks=[ProgressTable(cfg.sweep.max_steps)]),
        )
        results = tuner.fit()
        failed = [r for r in results if r.error is not None]
    finally:
        if sampler is not None:
            ray.kill(sampler)
        if own_ray:
            ray.shutdown()
    summary = summarize_sweep(sweep_dir, cfg.sweep.threshold, f"{cfg.setting.name} ({cfg.model.name})")
    log("\n" + format_table(summary, cfg.sweep.threshold))
    log(f"\n[sweep] done in {time.time() - started:.0f}s: {sweep_dir / 'summary.json'}, "
        f"{sweep_dir / 'attack_rate_vs_step.png'}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {n_trials} trials failed; their errors are under {sweep_dir / 'tune'}")
    return summary
