"""The sweep: build the model organism, label, start Ray and one vLLM engine, run every trial, summarise.

    python -m orchestrator sweep setting=wronglang_spanish [sweep.lrs=[1e-4,1e-3] sweep.seeds=[0,1] ...]
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from eval.metrics import format_table, summarize_trial
from eval.plots import plot_curves
from eval.report import write_report
from eval.runfiles import load_trials, trial_name, write_json, write_text_atomic
from orchestrator.config import settings_for_toy
from orchestrator.schema import Config, ConfigError
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
        enforce_eager=e.enforce_eager, seed=cfg.sample.seed, max_num_seqs=e.max_num_seqs,
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

    run_trial(ctx, float(config["trial"]["lr"]), int(config["trial"]["seed"]), tune.report)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def check_sweep_folder(sweep_dir: Path, config_text: str) -> bool:
    """True when the folder already holds this very sweep (so only missing trials run); refuses a
    folder that holds a different sweep's config, naming the keys that differ."""
    path = sweep_dir / "config.yaml"
    if not path.exists():
        return False
    old = path.read_text()
    if old == config_text:
        return True
    import yaml

    a, b = _flatten(yaml.safe_load(old)), _flatten(yaml.safe_load(config_text))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    raise ConfigError(
        f"{sweep_dir} already holds a different sweep (differs in: {', '.join(keys[:8])}). "
        f"Choose a new folder (hydra.run.dir=...), or finish that sweep with resume={sweep_dir}"
    )


def pending_trials(cfg: Config, sweep_dir: Path) -> list[dict[str, Any]]:
    """(lr, seed) pairs without a finished result.json: what a (resumed) sweep still has to run."""
    return [
        {"lr": lr, "seed": seed}
        for lr in cfg.sweep.lrs
        for seed in cfg.sweep.seeds
        if not (sweep_dir / "trials" / trial_name(lr, seed) / "result.json").exists()
    ]


def config_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(replace(cfg, resume=None)))


def run_sweep(cfg: Config, sweep_dir: Path) -> list[dict[str, Any]]:
    started = time.time()
    sweep_dir = sweep_dir.resolve()
    sweep_id = f"{cfg.setting.name}-{sweep_dir.name}"
    try:
        wandb_mode = resolve_wandb_mode(cfg.tracker.mode)  # refuse online-without-key before any compute
    except ValueError as err:
        raise ConfigError(str(err)) from None
    text = config_yaml(cfg)
    resuming = check_sweep_folder(sweep_dir, text)
    write_text_atomic(sweep_dir / "config.yaml", text)
    todo = pending_trials(cfg, sweep_dir)
    n_trials = len(cfg.sweep.lrs) * len(cfg.sweep.seeds)
    log(f"[sweep] {sweep_id}: {len(cfg.sweep.lrs)} LRs x {len(cfg.sweep.seeds)} seeds = {n_trials} trials, "
        f"{cfg.sweep.max_steps} steps each, batch {cfg.train.batch_size}, LoRA rank {cfg.train.lora_rank}; "
        f"folder {sweep_dir}")
    if resuming:
        log(f"[sweep] resuming: {n_trials - len(todo)} trials finished, {len(todo)} to run")
    failed: list[Any] = []
    if todo:
        failed = _run_trials(cfg, sweep_dir, sweep_id, todo, started)
    summary = summarize_sweep(sweep_dir, cfg.sweep.threshold, f"{cfg.setting.name} ({cfg.model.name})")
    log("\n" + format_table(summary, cfg.sweep.threshold))
    report = write_report([sweep_dir], sweep_dir) if summary else None
    if report and cfg.tracker.backend == "wandb" and wandb_mode != "disabled":
        from orchestrator.report_cmd import log_to_wandb

        log_to_wandb(sweep_dir, cfg.tracker.mode)  # report tables and plots: a summary run of the group
    log(f"\n[sweep] done in {time.time() - started:.0f}s: {sweep_dir / 'summary.json'}, "
        f"{sweep_dir / 'attack_rate_vs_step.png'}, {report}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {n_trials} trials failed; their errors are under {sweep_dir / 'tune'}")
    return summary


def _run_trials(cfg: Config, sweep_dir: Path, sweep_id: str, todo: list[dict[str, Any]],
                started: float) -> list[Any]:
    """Ray Tune over the pending trials, with one vLLM engine for all of them; returns failed results."""
    import ray
    from ray import tune

    from orchestrator.progress import ProgressTable

    model_path = resolve_model(cfg)
    labels = ensure_labels(cfg.setting, sweep_dir, log)
    own_ray = not ray.is_initialized()
    if own_ray:  # "local" always starts a fresh cluster, never joins a stale one
        ray.init(address=cfg.sweep.ray_address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    sampler_name = f"lrsweep-sampler-{os.getpid()}-{int(started)}"
    sampler = None
    try:
        from workers.sampler import Sampler

        log("[sampler] starting one vLLM engine for the whole sweep (multi-LoRA)...")
        # a dead actor process is restarted (engine and all) and its pending calls retried; threaded so
        # that requests of concurrent trials queue up inside the actor and share one engine call
        sampler = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2, max_concurrency=64)(Sampler).options(
            name=sampler_name).remote(sampler_spec(cfg, model_path))
        ray.get(sampler.ready.remote())
        log(f"[sampler] ready after {time.time() - started:.0f}s")
        ctx = TrialContext(
            sweep_dir=str(sweep_dir), sweep_id=sweep_id, sampler_name=sampler_name, setting=cfg.setting,
            model_name=cfg.model.name, train=build_train_spec(cfg, model_path, 0.0, 0), labels_path=str(labels),
            sample=cfg.sample, tracker=cfg.tracker, threshold=cfg.sweep.threshold, early_stop=cfg.sweep.early_stop,
        )
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {"cpu": cfg.sweep.cpus_per_trial}),
            param_space={"trial": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.sweep.max_concurrent_trials, reuse_actors=False),
            run_config=tune.RunConfig(
                name=f"tune_{time.strftime('%Y%m%d_%H%M%S')}", storage_path=str(sweep_dir), verbose=0,
                failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_retries),
                callbacks=[ProgressTable(cfg.sweep.max_steps)]),
        )
        return [r for r in tuner.fit() if r.error is not None]
    finally:
        if sampler is not None:
            try:  # how much cross-trial batching happened: requests per engine call
                st = ray.get(sampler.stats.remote(), timeout=10)
                log(f"[sampler] {st['requests']} requests in {st['engine_calls']} engine calls "
                    f"(at most {st['max_batch_requests']} in one), {st['generated_tokens']} tokens generated")
            except Exception:  # a dead engine must not hide the sweep's own error
                pass
            ray.kill(sampler, no_restart=True)
        if own_ray:
            ray.shutdown()
