"""Hydra entry points. `@hydra.main` appears here once per command; below, code gets typed objects."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from orchestrator.config import CONF_DIR
from orchestrator.schema import ConfigError, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def sweep_main(dcfg: DictConfig) -> None:
    from orchestrator.config import to_typed

    try:
        cfg = to_typed(dcfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    from orchestrator.sweep import run_sweep

    run_sweep(cfg, Path(HydraConfig.get().runtime.output_dir))
