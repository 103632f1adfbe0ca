"""Build (or find) the toy model alone, without a sweep; prints its folder.

    python -m orchestrator toy [hydra overrides, e.g. setting=animal_flag]
"""

from __future__ import annotations

from orchestrator.config import compose_config, settings_for_toy
from workers.models.toy import ensure_toy


def main(argv: list[str]) -> int:
    cfg = compose_config(argv)
    print(ensure_toy(cfg.model.toy, settings_for_toy(cfg), cfg.cache_dir))
    return 0
