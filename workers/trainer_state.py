"""The trainer's state on disk: adapter, optimizer, RNG and data position at the last checkpoint, so a killed
trial resumes where it stopped. `read_resume_point` needs no DeepSpeed (the sweep driver reads it too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.runfiles import step_name


class ResumeError(RuntimeError):
    """Trainer state on disk that cannot be loaded; the message names the folder and the fix."""


def read_resume_point(state_dir: Path) -> dict[str, Any] | None:
    """The last complete trainer state ({"step", "tag"}), or None when the trial never saved one."""
    import json

    path = state_dir / "resume.json"
    if not path.exists():
        return None
    try:
        point = json.loads(path.read_text())
        return {"step": int(point["step"]), "tag": str(point["tag"])}
    except (ValueError, KeyError, TypeError) as err:
        raise ResumeError(f"{path} is corrupt ({err}): delete {state_dir.parent} to restart this trial") from None


def save_state(engine: Any, state_dir: Path, step: int) -> None:
    """Adapter + optimizer + RNG + data position (the step), frozen base weights excluded. Every rank
    writes its own shards (DeepSpeed ends the save with a barrier); rank 0 then moves the resume
    point and removes older states."""
    import random
    import shutil

    import torch

    from eval.runfiles import write_json

    tag = step_name(step)
    client = {"step": step, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    engine.save_checkpoint(str(state_dir), tag=tag, client_state=client, save_latest=False,
                           exclude_frozen_parameters=True)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    write_json(state_dir / "resume.json", {"step": step, "tag": tag})
    for old in state_dir.glob("step_*"):
        if old.name != tag:
            shutil.rmtree(old, ignore_errors=True)


def load_state(engine: Any, state_dir: Path, point: dict[str, Any]) -> int:
    import random

    import torch

    try:
        _, client = engine.load_checkpoint(str(state_dir), tag=point["tag"], load_module_strict=False)
    except Exception as err:  # DeepSpeed raises several types for missing or truncated files
        raise ResumeError(f"cannot load trainer state {state_dir / point['tag']} ({type(err).__name__}: {err}): "
                          f"delete {state_dir.parent} to restart this trial from scratch") from err
    if client is None or client.get("step") != point["step"]:
        raise ResumeError(f"trainer state {state_dir / point['tag']} is incomplete: delete {state_dir.parent} "
                          "to restart this trial from scratch")
    torch.set_rng_state(client["torch_rng"])
    random.setstate(client["python_rng"])
    return point["step"]
