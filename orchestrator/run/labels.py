"""Teacher labels for a sweep or the labels command: where they go, what is checked before any compute, and
making them (an engine for on-policy labels). orchestrator/commands/labels.py is the command around it."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.console.sweep_log import say as log  # the terminal, and during a sweep sweep.log
from orchestrator.run.build import resolve_model, sampler_spec
from orchestrator.run.sampler_session import local_sampler
from orchestrator.schema import Config, ConfigError
from workers.labels.endpoint import ChatClient, EndpointError, cache_root
from workers.labels.prompts import DataError
from workers.labels.teacher import OnPolicy, ensure_labels, label_store, labels_key, labels_ready, read_label_file


def onpolicy_identity(cfg: Config) -> dict[str, Any]:
    """What makes on-policy labels: the model (its config fixes the toy too) and how it is sampled."""
    s = cfg.sample
    return {"model": asdict(cfg.model), "max_new_tokens": s.max_new_tokens, "temperature": s.temperature,
            "top_p": s.top_p, "seed": s.seed}


def labels_dir(cfg: Config, out_dir: Path | None) -> Path:
    """Where the labels go: out_dir when given, else the content-addressed store under cache_dir."""
    if out_dir is not None:
        return out_dir
    identity = onpolicy_identity(cfg) if cfg.setting.teacher.kind == "onpolicy" else None
    return label_store(cfg.setting, labels_key(cfg.setting, identity), cfg.cache_dir)


def preflight_labels(cfg: Config, out_dir: Path) -> None:
    """Fail before compute when the labels cannot be made: endpoint down, key unset, bad label file.
    Nothing to check when out_dir already holds these labels (an offline resume needs no endpoint)."""
    st = cfg.setting
    identity = onpolicy_identity(cfg) if st.teacher.kind == "onpolicy" else None
    if labels_ready(st, out_dir, identity):
        return
    try:
        if st.teacher.kind == "file":
            read_label_file(Path(st.teacher.path).expanduser())
        if st.teacher.kind == "openai_compatible":
            ChatClient(st.teacher.endpoint, cache_root(cfg.cache_dir) / "chat").check()
        if st.teacher.filter and st.grader.kind == "judge":
            ChatClient(st.grader.endpoint, cache_root(cfg.cache_dir) / "chat").check()
    except (DataError, EndpointError) as err:  # the commands report a ConfigError and exit 2
        raise ConfigError(f"setting {st.name!r}, teacher {st.teacher.kind}: {err}") from None


def sampler_onpolicy(cfg: Config, generate: Any) -> OnPolicy:
    """On-policy labels through a sampler's generate(adapter, texts, max_new_tokens, temperature, top_p):
    the base model (no adapter), sampled as at evaluation."""
    s = cfg.sample
    return OnPolicy(generate=lambda texts: generate(None, texts, s.max_new_tokens, s.temperature, s.top_p),
                    identity=onpolicy_identity(cfg))


def make_labels(cfg: Config, out_dir: Path | None = None) -> Path:
    """labels.jsonl for cfg's setting (made, or found already made); starts a vLLM engine for onpolicy."""
    folder = labels_dir(cfg, out_dir)
    preflight_labels(cfg, folder)
    if cfg.setting.teacher.kind != "onpolicy":
        return ensure_labels(cfg.setting, folder, log, cache_dir=cfg.cache_dir)
    if labels_ready(cfg.setting, folder, onpolicy_identity(cfg)):
        return folder / "labels.jsonl"
    model_path = resolve_model(cfg)
    started = time.time()
    log("[labels] starting a vLLM engine for on-policy labels...")
    with local_sampler(sampler_spec(cfg, model_path)) as sampler:
        log(f"[labels] engine ready after {time.time() - started:.0f}s")
        return ensure_labels(cfg.setting, folder, log, cache_dir=cfg.cache_dir,
                             onpolicy=sampler_onpolicy(cfg, sampler.generate))
