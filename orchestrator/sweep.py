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
from orchestrator.labels_cmd import preflight_labels, sampler_onpolicy
from orchestrator.placement import SAMPLER_RESOURCE, sampler_placement, trial_placement
from orchestrator.schema import Config, ConfigError
from orchestrator.trial import TrialContext, eval_prompts, run_trial
from workers.sampler import SamplerSpec
from workers.teacher import ensure_labels
from workers.tracking import OWN_WANDB_SERVICE, resolve_wandb_mode
from workers.train import build_train_spec


def log(msg: str) -> None:
    print(msg, flush=True)


def resolve_base_model(cfg: Config) -> str:
    """The base model's path: the configured path/hub id, a real model prepared offline (model.prepare), or the
    cached toy (each built on first use)."""
    if cfg.model.path is not None:
        return cfg.model.path
    if cfg.model.prepare is not None:
        from workers.real_models import ModelPrepError, ensure_prepared

        try:
            return str(ensure_prepared(cfg.model.prepare, cfg.cache_dir, log))
        except ModelPrepError as err:
            raise ConfigError(str(err)) from None
    from workers.toy import ensure_toy

    return str(ensure_toy(cfg.model.toy, settings_for_toy(cfg), cfg.cache_dir, log))


def measure_model(cfg: Config, model_path: str, n: int, held_out: bool) -> dict[str, Any]:
    """Rates of the base model (no adapter) on n eval and n train prompts, through a vLLM engine of its own."""
    from workers.probe import measure
    from workers.sampler import Sampler

    started = time.time()
    sampler = Sampler(sampler_spec(cfg, model_path))
    try:
        s = cfg.sample
        result = measure(lambda texts: sampler.generate(None, texts, s.max_new_tokens, s.temperature, s.top_p),
                         cfg.setting, n, s.seed, held_out)
    finally:
        sampler.shutdown()
    return result | {"model_path": model_path, "max_new_tokens": cfg.sample.max_new_tokens,
                     "temperature": cfg.sample.temperature, "seconds": round(time.time() - started, 1)}


def resolve_model(cfg: Config) -> str:
    """The sweep's model: the base model, or with model.organism=true the setting's organism built from it."""
    base = resolve_base_model(cfg)
    if not cfg.model.organism:
        return base
    from workers.organism import ensure_organism

    m = cfg.model
    return str(ensure_organism(
        base, cfg.setting, m.organism_recipe, cfg.cache_dir, dtype=m.dtype,
        chat_template_kwargs=dict(m.chat_template_kwargs), max_len=m.max_model_len, log=log,
        measure=lambda path: measure_model(cfg, path, m.organism_recipe.n_measure, held_out=True)))


def sampler_spec(cfg: Config, model_path: str) -> SamplerSpec:
    e = cfg.sample.engine
    return SamplerSpec(
        model_path=model_path, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
        max_lora_rank=cfg.train.lora_rank, chat_template_kwargs=dict(cfg.model.chat_template_kwargs),
        gpu_memory_utilization=e.gpu_memory_utilization, cpu_kvcache_space_gib=e.cpu_kvcache_space_gib,
        max_loras=e.max_loras, max_cpu_loras=e.max_cpu_loras, tensor_parallel_size=e.tensor_parallel_size,
        enforce_eager=e.enforce_eager, seed=cfg.sample.seed, max_num_seqs=e.max_num_seqs,
        cpu_lora_kernel=e.cpu_lora_kernel,
    )


def resolve_capability(cfg: Config) -> Any:
    from workers.capability import resolve

    return resolve(cfg.capability, cfg.cache_dir)


def summarize_sweep(sweep_dir: Path, threshold: float, title: str = "") -> list[dict[str, Any]]:
    """summary.json, the plot and the terminal table, from the run folder alone."""
    summary = [summarize_trial(t, rows, threshold) for t, rows in load_trials(sweep_dir)]
    write_json(sweep_dir / "summary.json", summary)
    if summary:
        plot_curves(summary, threshold, sweep_dir / "attack_rate_vs_step.png", title)
    return summary


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    from ray import tune

    lr, seed = float(config["trial"]["lr"]), int(config["trial"]["seed"])
    if ctx.placement.num_workers > 1:  # trainer workers in their own placement group
        from orchestrator.distributed import run_distributed_trial

        run_distributed_trial(ctx, lr, seed, tune.report)
    else:  # the trainer runs in this process: fastest on a laptop
        run_trial(ctx, lr, seed, tune.report)


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


def resume_problems(trial_dir: Path) -> list[str]:
    """What would stop a trial from resuming from its files: a corrupt resume point, a missing trainer state,
    or an adapter that is truncated or unreadable. Checked before Ray or an engine starts."""
    import json

    from safetensors import safe_open

    from workers.trainer_state import ResumeError, read_resume_point

    try:
        point = read_resume_point(trial_dir / "state")
    except ResumeError as err:
        return [str(err)]
    if point is None:
        return []
    problems = []
    state = trial_dir / "state" / point["tag"]
    if not state.is_dir() or not any(state.iterdir()):
        problems.append(f"{state} is missing or empty")
    for adapter in sorted((trial_dir / "adapters").glob("step_*")):
        if int(adapter.name.split("_")[1]) > point["step"]:
            continue  # past the resume point: retrained and rewritten
        try:
            json.loads((adapter / "adapter_config.json").read_text())
            with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as fh:
                fh.keys()  # parses the header, which also checks the file is not truncated
        except Exception as err:  # missing file, bad JSON, bad header: all mean the same to the user
            problems.append(f"{adapter} is corrupt ({type(err).__name__}: {err})")
    return problems


def check_resumable(sweep_dir: Path, todo: list[dict[str, Any]]) -> None:
    """Refuse to resume when a pending trial's files are damaged, naming each one and the fix."""
    bad = {}
    for t in todo:
        trial_dir = sweep_dir / "trials" / trial_name(t["lr"], t["seed"])
        problems = resume_problems(trial_dir) if trial_dir.exists() else []
        if problems:
            bad[trial_dir] = problems
    if bad:
        lines = [f"  {p}" for problems in bad.values() for p in problems]
        folders = " ".join(str(d) for d in bad)
        raise ConfigError("cannot resume: damaged trial files\n" + "\n".join(lines) +
                          f"\nDelete the damaged trial folder(s) to rerun those trials from scratch: rm -r {folders}")


def config_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(replace(cfg, resume=None)))


def preflight(cfg: Config) -> str:
    """Every check that reads data or the environment, before the sweep folder gets a file or compute starts:
    the W&B mode (online without a key is refused), the question bank and the prompts built from it.
    Returns the resolved W&B mode. Raises ConfigError or DataError naming the problem and the fix."""
    try:
        wandb_mode = resolve_wandb_mode(cfg.tracker.mode)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    eval_prompts(cfg.setting, cfg.sample)  # loads and checks the bank, renders every template
    return wandb_mode


def run_sweep(cfg: Config, sweep_dir: Path) -> list[dict[str, Any]]:
    started = time.time()
    sweep_dir = sweep_dir.resolve()
    sweep_id = f"{cfg.setting.name}-{sweep_dir.name}"
    wandb_mode = preflight(cfg)
    text = config_yaml(cfg)
    resuming = check_sweep_folder(sweep_dir, text)
    todo = pending_trials(cfg, sweep_dir)
    if resuming:
        check_resumable(sweep_dir, todo)
    if todo:  # a teacher endpoint that is down, or a bad label file, fails here: nothing written yet
        preflight_labels(cfg, sweep_dir)
    write_text_atomic(sweep_dir / "config.yaml", text)
    n_trials = len(cfg.sweep.lrs) * len(cfg.sweep.seeds)
    log(f"[sweep] {sweep_id}: {len(cfg.sweep.lrs)} LRs x {len(cfg.sweep.seeds)} seeds = {n_trials} trials, "
        f"{cfg.sweep.max_steps} steps each, batch {cfg.train.batch_size}, LoRA rank {cfg.train.lora_rank}; "
        f"folder {sweep_dir}")
    if resuming:
        log(f"[sweep] resuming: {n_trials - len(todo)} trials finished, {len(todo)} to run")
    failed: list[Any] = []
    if todo and cfg.capability.benchmarks:
        from workers.capability import check_data

        try:
            check_data(resolve_capability(cfg))  # absent benchmark files: a clear error before any compute
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
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

    placement = trial_placement(cfg.train.num_workers, cfg.sweep.cpus_per_trial, cfg.cluster.gpus_per_node,
                                cfg.train.dist_backend, cfg.cluster.nodes)
    model_path = resolve_model(cfg)
    train_spec = build_train_spec(cfg, model_path, 0.0, 0)  # its refusals come before labels and engines
    onpolicy = cfg.setting.teacher.kind == "onpolicy"  # labelled by the sweep's engine, once it is up
    labels = None if onpolicy else ensure_labels(cfg.setting, sweep_dir, log, cache_dir=cfg.cache_dir)
    own_ray = not ray.is_initialized()
    if own_ray:  # "local" always starts a fresh cluster, never joins a stale one
        local = {"resources": {SAMPLER_RESOURCE: 1}} if not cfg.sweep.ray_address else {}
        ray.init(address=cfg.sweep.ray_address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "LRSWEEP_CACHE": cfg.cache_dir}
                                          | OWN_WANDB_SERVICE},
                 **local)
    sampler_name = f"lrsweep-sampler-{os.getpid()}-{int(started)}"
    sampler = None
    try:
        from workers.sampler import Sampler

        where = sampler_placement(cfg.sample.engine.tensor_parallel_size, cfg.cluster.gpus_per_node,
                                  SAMPLER_RESOURCE in ray.cluster_resources(), cfg.cluster.nodes,
                                  int(placement.gpus_per_worker * placement.num_workers))
        log(f"[sampler] starting one vLLM engine for the whole sweep (multi-LoRA) with {where.actor_options()}...")
        # a dead actor process is restarted (engine and all) and its pending calls retried; threaded so
        # that requests of concurrent trials queue up inside the actor and share one engine call
        sampler = ray.remote(max_restarts=2, max_task_retries=2, max_concurrency=64)(Sampler).options(
            name=sampler_name, **where.actor_options()).remote(sampler_spec(cfg, model_path))
        ray.get(sampler.ready.remote())
        node = ray.get(sampler.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()))
        write_json(sweep_dir / "placement.json", {
            "sampler": {"node_id": node, **where.actor_options()},
            "trial": {"num_workers": placement.num_workers, "bundles": placement.bundles,
                      "strategy": placement.strategy, "backend": placement.backend}})
        log(f"[sampler] ready after {time.time() - started:.0f}s on node {node[:8]}; each trial: "
            f"{placement.num_workers} x {placement.worker_resources} ({placement.strategy})")
        if labels is None:
            labels = ensure_labels(cfg.setting, sweep_dir, log, cache_dir=cfg.cache_dir, onpolicy=sampler_onpolicy(
                cfg, lambda *args: ray.get(sampler.generate.remote(*args))))
        ctx = TrialContext(
            sweep_dir=str(sweep_dir), sweep_id=sweep_id, sampler_name=sampler_name, setting=cfg.setting,
            model_name=cfg.model.name, train=train_spec, labels_path=str(labels),
            sample=cfg.sample, tracker=cfg.tracker, threshold=cfg.sweep.threshold, early_stop=cfg.sweep.early_stop,
            placement=placement,
        )
        if cfg.capability.benchmarks:  # the model before training, once per sweep (cached in the sweep folder)
            from workers.capability import ensure_baseline

            cap = resolve_capability(cfg)
            baseline = ensure_baseline(cap, sweep_dir, model_path,
                                       lambda *args: ray.get(sampler.generate.remote(*args)), log)
            ctx = replace(ctx, capability=cap, capability_baseline=baseline)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, ctx=ctx), placement.tune_resources()),
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
