"""Teacher labels as their own cached, resumable command (the sweep runs the same code on its folder).

    python -m orchestrator labels setting=wronglang_spanish [hydra overrides]
    python -m orchestrator labels setting=my_setting hydra.run.dir=/abs/sweep_dir   # into a sweep folder

Without hydra.run.dir the labels land in `<cache_dir>/labels/<setting>/<key>/` (labels.jsonl +
labels.meta.json), where the key hashes everything that made them; a later sweep with the same inputs
copies them from there instead of labelling again. With hydra.run.dir=DIR they land in DIR, which a
sweep started with the same hydra.run.dir then uses as they are. Running the command again costs
nothing: finished labels are reused, and an endpoint teacher's completions are cached one by one, so
an interrupted run resumes where it stopped. Before anything runs, the teacher is checked: its
endpoint (key set, server up, model served), or its label file (every bad line reported).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.build import resolve_model, sampler_spec
from orchestrator.sampler_session import local_sampler
from orchestrator.schema import Config, ConfigError
from workers.endpoint import ChatClient, EndpointError, cache_root
from workers.prompts import DataError
from workers.teacher import OnPolicy, ensure_labels, label_store, labels_key, labels_ready, read_label_file


def log(msg: str) -> None:
    print(msg, flush=True)


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


def split_args(argv: list[str]) -> tuple[list[str], Path | None]:
    """(Hydra overrides, the output folder from hydra.run.dir=DIR if given)."""
    overrides, out = [], None
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            out = Path(arg.split("=", 1)[1]).expanduser().resolve()
        else:
            overrides.append(arg)
    return overrides, out


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from orchestrator.config import compose_config

    overrides, out = split_args(argv)
    cfg = compose_config(overrides)
    from orchestrator.preflight import check_labels

    check_labels(cfg)
    path = make_labels(cfg, out)  # user errors: exit 2 in orchestrator/__main__.py
    log(f"[labels] ready: {path}")
    return 0
