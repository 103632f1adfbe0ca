"""The run-folder contract: plain files that resume, analysis and reports read (never Ray objects).

<sweep_dir>/
  config.yaml            resolved config (no secrets)
  labels.jsonl           teacher labels (+ labels.meta.json: what made them)
  trials/<name>/config.json, metrics.jsonl, samples/step_XXXXX.jsonl, adapters/step_XXXXX/
  trials/<name>/result.json (it finished) or error.json (it failed for good: last error line, full error's file)
  summary.json, curves.csv, attack_rate_vs_step.png
Every file is written atomically (temporary file, then rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """One line per call, flushed; a torn last line (crash mid-write) is skipped by read_jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn final line from an interrupted append
    return rows


def step_name(step: int) -> str:
    return f"step_{step:05d}"


def trial_name(lr: float, seed: int) -> str:
    return f"lr{lr:.3g}_seed{seed}"


def load_trials(sweep_dir: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(trial config, metrics rows) for every trial folder that has a config.json."""
    out = []
    for cfg_path in sorted((sweep_dir / "trials").glob("*/config.json")):
        out.append((json.loads(cfg_path.read_text()), read_jsonl(cfg_path.parent / "metrics.jsonl")))
    return out


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is absent or torn."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_trial_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Everything a trial folder says about its outcome: config.json, metrics.jsonl rows, error.json (written by the
    sweep driver when the trial failed for good) and whether result.json (written when it finished) exists."""
    out = []
    for cfg_path in sorted((Path(sweep_dir) / "trials").glob("*/config.json")):
        d = cfg_path.parent
        out.append({"config": json.loads(cfg_path.read_text()), "rows": read_jsonl(d / "metrics.jsonl"),
                    "error": read_json(d / "error.json"), "finished": (d / "result.json").exists()})
    return out
