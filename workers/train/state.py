"""The trainer's state on disk: adapter, optimizer, RNG, data position and the train losses not yet written, so a
killed trial resumes where it stopped. Saved at every checkpoint, every `train.state_every_s` seconds and when the
sweep folder's SAVE_REQUEST file is touched (the Slurm job does it on its warning signal); only the latest state
is kept. `read_resume_point` needs no DeepSpeed (the sweep driver reads it too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.errors import UserError
from eval.runfiles import step_name

# in the sweep folder: touched by the Slurm job on its warning signal (slurm/sweep.sbatch); a trainer that sees it
# change saves its state at the next step boundary (on shared storage, so it reaches the trainers on every node)
SAVE_REQUEST = "save_state.request"


class ResumeError(UserError, RuntimeError):
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


def save_state(engine: Any, state_dir: Path, step: int, step_losses: list[float]) -> None:
    """Adapter + optimizer + RNG + data position (the step) + the losses of the steps since the last checkpoint
    (their rows are written at the next one), frozen base weights excluded. Every rank writes its own shards
    (DeepSpeed ends the save with a barrier); rank 0 then moves the resume point and removes older states."""
    import random
    import shutil

    import torch

    from eval.runfiles import write_json

    tag = step_name(step)
    client = {"step": step, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
              "step_losses": list(step_losses)}
    engine.save_checkpoint(str(state_dir), tag=tag, client_state=client, save_latest=False,
                           exclude_frozen_parameters=True)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    write_json(state_dir / "resume.json", {"step": step, "tag": tag})
    for old in state_dir.glob("step_*"):
        if old.name != tag:
            shutil.rmtree(old, ignore_errors=True)


def load_state(engine: Any, state_dir: Path, point: dict[str, Any]) -> tuple[int, list[float]]:
    """Restore a saved state; returns (its step, the losses of the steps since the last checkpoint)."""
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
    return point["step"], list(client.get("step_losses", []))


class StateSchedule:
    """When to save trainer state between checkpoints: `every_s` seconds after the last save (0: never), and
    whenever the request file changes (a file present before training started is an old request, already
    answered). Rank 0 asks; the group follows its answer, so every rank saves at the same step."""

    def __init__(self, every_s: float, request_file: str = "") -> None:
        import time

        self.every_s = every_s
        self.request = Path(request_file) if request_file else None
        self.seen = self._stamp()
        self.last = time.monotonic()

    @property
    def active(self) -> bool:
        return self.every_s > 0 or self.request is not None

    def _stamp(self) -> int | None:
        try:
            return self.request.stat().st_mtime_ns if self.request is not None else None
        except OSError:  # not there (yet), or shared storage briefly unreachable: no request
            return None

    def due(self) -> str | None:
        """Why state should be saved now ("request" or "interval"), or None; a request is answered once."""
        import time

        stamp = self._stamp()
        if stamp is not None and stamp != self.seen:
            self.seen = stamp
            return "request"
        if self.every_s > 0 and time.monotonic() - self.last >= self.every_s:
            return "interval"
        return None

    def saved(self) -> None:
        import time

        self.last = time.monotonic()
