"""Builders: config -> the objects the engines run from. One home, so the sweep, labels, recover, probe, the
one-trial command and the bench scripts build them the same way.

    model path      resolve_model(cfg)       (base model, a prepared real model or the toy; the organism on top)
    train spec      build_train_spec(run, model_path, lr, seed)   (run: the command's Resolved, or a Config)
    sampler spec    sampler_spec(run, model_path)                 (run: the command's Resolved, or a Config)
    capability      resolve_capability(cfg)
    plan            build_plan(cfg)                               (orchestrator/plan/planner.py's arithmetic)
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from orchestrator.budget import trial_fields
from orchestrator.config import settings_for_toy
from orchestrator.console.sweep_log import say as log  # the terminal, and during a sweep sweep.log
from orchestrator.plan.planner import Plan, make_plan
from orchestrator.plan.resolve import Resolved, resolve_run
from orchestrator.run.sampler_session import local_sampler
from orchestrator.schema import Config, ConfigError
from workers.capability import resolve as resolve_benchmarks
from workers.models.probe import measure
from workers.sample.sampler import SamplerSpec
from workers.train.trainer import TrainSpec


def resolve_base_model(cfg: Config) -> str:
    """The base model's path: the configured path/hub id, a real model prepared offline (model.prepare), or the
    cached toy (each built on first use)."""
    if cfg.model.path is not None:
        return cfg.model.path
    if cfg.model.prepare is not None:
        from workers.models.real_models import ModelPrepError, ensure_prepared

        try:
            return str(ensure_prepared(cfg.model.prepare, cfg.cache_dir, log))
        except ModelPrepError as err:
            raise ConfigError(str(err)) from None
    from workers.models.toy import ensure_toy

    return str(ensure_toy(cfg.model.toy, settings_for_toy(cfg), cfg.cache_dir, log))


def measure_model(cfg: Config, model_path: str, n: int, held_out: bool) -> dict[str, Any]:
    """Rates of the base model (no adapter) on n eval and n train prompts, through a vLLM engine of its own."""
    started = time.time()
    with local_sampler(sampler_spec(cfg, model_path)) as sampler:
        s = cfg.sample
        result = measure(lambda texts: sampler.generate(None, texts, s.max_new_tokens, s.temperature, s.top_p),
                         cfg.setting, n, s.seed, held_out)
    return result | {"model_path": model_path, "max_new_tokens": cfg.sample.max_new_tokens,
                     "temperature": cfg.sample.temperature, "seconds": round(time.time() - started, 1)}


def resolve_model(cfg: Config) -> str:
    """The sweep's model: the base model, or with model.organism=true the setting's organism built from it."""
    base = resolve_base_model(cfg)
    if not cfg.model.organism:
        return base
    from workers.models.organism import ensure_organism

    m = cfg.model
    return str(ensure_organism(
        base, cfg.setting, m.organism_recipe, cfg.cache_dir, dtype=m.dtype,
        chat_template_kwargs=dict(m.chat_template_kwargs), max_len=m.max_model_len, log=log,
        measure=lambda path: measure_model(cfg, path, m.organism_recipe.n_measure, held_out=True)))


def sampler_spec(run: Resolved | Config, model_path: str) -> SamplerSpec:
    """The engine's config: the sample block's engine knobs as the plan resolved them (orchestrator/plan/resolve.py;
    a Config is resolved here, a Resolved is not planned again), whole, with the model and the sampling seed."""
    cfg = resolve_run(run).config
    return SamplerSpec(model_path=model_path, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
                       chat_template_kwargs=dict(cfg.model.chat_template_kwargs), seed=cfg.sample.seed,
                       engine=cfg.sample.engine, require_cuda=plan_wants_cuda(cfg))


def plan_wants_cuda(cfg: Config) -> bool:
    """The cluster has GPUs and the trainers use them (NCCL): the workers refuse to start without CUDA. A CPU
    rehearsal on Ray's logical GPUs says train.dist_backend=gloo (tests/integration/test_rehearsal.py)."""
    return cfg.cluster.gpus_per_node > 0 and cfg.train.dist_backend != "gloo"


def resolve_capability(cfg: Config) -> Any:
    """The capability benchmarks' spec (workers.capability.CapabilitySpec): items found, judge and limits."""
    return resolve_benchmarks(cfg.capability, cfg.cache_dir)


def build_train_spec(run: Resolved | Config, model_path: str, lr: float, seed: int) -> TrainSpec:
    """The trial's trainer config: the train block as the plan resolved it (orchestrator/plan/resolve.py; a Config is
    resolved here, a Resolved is not planned again), whole, with what the model, the trial and the plan add."""
    run = resolve_run(run)  # refuses train.compile with ZeRO-3, and anything that cannot fit
    cfg, plan = run.config, run.plan
    t, m = cfg.train, cfg.model
    train = replace(t, zero_stage=int(t.zero_stage), micro_batch_size=int(t.micro_batch_size),
                    hpz_partition_size=int(t.hpz_partition_size), collective_timeout_s=float(t.collective_timeout_s))
    return TrainSpec(
        model_path=model_path, dtype=m.dtype, lora_target_modules=list(m.lora_target_modules),
        **trial_fields(cfg.sweep, lr, seed),  # lr, data and init seeds, this LR's steps and checkpoints
        train=train, max_seq_len=m.max_model_len, chat_template_kwargs=dict(m.chat_template_kwargs),
        lora_expert_parameters=list(m.lora_expert_parameters) if m.lora_experts else [],
        gradient_checkpointing=m.gradient_checkpointing,
        release_gpu_cache=cfg.sample.engine.sleep is True,  # the plan's: the sampler sleeps on the trainers' GPUs
        require_cuda=plan_wants_cuda(cfg),
        zero_buffers=dict(plan.sections["trainer"]["zero_buffers"]),  # the sizes its memory sum counted
    )


def build_plan(cfg: Config) -> Plan:
    """GPUs, memory, sampler shape and time of the sweep, before any allocation (`python -m orchestrator plan`)."""
    return make_plan(cfg)
