"""Checks a sweep passes before any compute: what its numbers will mean, not only whether its config is valid.

`validate` (orchestrator/schema.py) checks each config on its own; these read the question bank and the model
choice together, and run where a sweep, a submission, a dry run or a label run starts (not on every compose, so
planning a real model under a toy setting stays possible). A resumed sweep is not re-checked: it finishes as it
started.
"""

from __future__ import annotations

from orchestrator.schema import Config, ConfigError
from workers.labels.prompts import DataError, check_prompt_counts
from workers.labels.teacher import check_scripted


def model_is_toy(cfg: Config) -> bool:
    """model=toy: lrsweep's own pretrained organism (no path, a `toy:` block, not an organism built on top)."""
    return cfg.model.path is None and cfg.model.toy is not None and not cfg.model.organism


def check_labels(cfg: Config) -> None:
    """Scripted labels only on the toy unless the setting allows them (workers.labels.teacher.check_scripted)."""
    try:
        check_scripted(cfg.setting.teacher, model_is_toy(cfg), cfg.model.name)
    except DataError as err:
        raise ConfigError(str(err)) from err


def preflight(cfg: Config) -> None:
    """Refuse, with the fix, a sweep whose rates would overstate n or whose labels are a template on a real model."""
    check_labels(cfg)
    try:
        check_prompt_counts(cfg.setting, cfg.sample)
    except DataError as err:
        raise ConfigError(str(err)) from err
