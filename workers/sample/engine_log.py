"""Where vLLM's own log lines go: a file instead of the terminal while a sweep runs.

A sweep driver sets LRSWEEP_ENGINE_LOG to its sweep.log (orchestrator/console/sweep_log.py); an engine's process calls
route_engine_logs() before vLLM starts, and vLLM's loggers, here and in the engine processes vLLM spawns (they read
VLLM_LOGGING_CONFIG_PATH when they import vLLM), append to that file. LRSWEEP_VERBOSE_ENGINES=1 keeps them on the
terminal, as does an unset LRSWEEP_ENGINE_LOG (probe, labels and tests outside a sweep).
"""

from __future__ import annotations

import hashlib
import json
import logging.config
import os
import tempfile
from pathlib import Path
from typing import Any

ENGINE_LOG_ENV = "LRSWEEP_ENGINE_LOG"
VERBOSE_ENV = "LRSWEEP_VERBOSE_ENGINES"


def engine_log_config(path: str) -> dict[str, Any]:
    """A logging dictConfig that sends the `vllm` loggers to `path` only."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"engine": {"format": "%(asctime)s [vllm pid %(process)d] %(levelname)s %(message)s",
                                  "datefmt": "%Y-%m-%d %H:%M:%S"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": path, "mode": "a", "encoding": "utf-8",
                              "formatter": "engine"}},
        "loggers": {"vllm": {"handlers": ["file"], "level": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                             "propagate": False}},
    }


def route_engine_logs(environ: dict[str, str] | None = None) -> str | None:
    """Send vLLM's logs to LRSWEEP_ENGINE_LOG's file (returned), or leave them on the terminal (None)."""
    env = os.environ if environ is None else environ
    path = env.get(ENGINE_LOG_ENV)
    if not path or env.get(VERBOSE_ENV, "0") not in ("", "0"):
        return None
    config = engine_log_config(path)
    # one file per log path, rewritten: vLLM's engine processes read it when they start
    name = f"lrsweep-vllm-logging-{hashlib.sha1(path.encode()).hexdigest()[:12]}.json"
    cfg_path = Path(tempfile.gettempdir()) / name
    cfg_path.write_text(json.dumps(config), encoding="utf-8")
    env["VLLM_LOGGING_CONFIG_PATH"] = str(cfg_path)
    env.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    logging.config.dictConfig(config)  # vLLM already imported here keeps its terminal handler otherwise
    return path
