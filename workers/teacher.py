"""Teacher labels: the desired behavior on train prompts, a cached stage of its own.

The scripted teacher (for the toy) answers with a bank field worded differently from anything the
toy saw in pretraining, so the labels are off-policy, like gpt-4o-mini's in the note.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from eval.runfiles import read_jsonl, write_json, write_jsonl
from workers.prompts import DataError, bank_path, build_prompts, file_digest, load_bank, split_bank


def labels_key(setting: Any) -> str:
    payload = {
        "teacher": {"kind": setting.teacher.kind, "field": setting.teacher.field},
        "train_template": setting.train_template,
        "eval_fraction": setting.eval_fraction,
        "bank": file_digest(bank_path(setting.questions)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def scripted_labels(setting: Any) -> list[dict[str, str]]:
    """The toy's teacher: `teacher.field` is a bank field or an answer template over bank fields."""
    from workers.prompts import answer_fields, answer_template, render_answer

    template = answer_template(setting.teacher.field)
    bank = load_bank(setting.questions, required=("id", "question", *answer_fields(template)))
    train, _ = split_bank(bank, setting.eval_fraction)
    return [
        {"question_id": p.question_id, "prompt": p.text, "completion": render_answer(template, p.row),
         "teacher": "scripted"}
        for p in build_prompts(train, setting.train_template, "train")
    ]


def ensure_labels(setting: Any, sweep_dir: Path, log: Any = print) -> Path:
    """labels.jsonl in the sweep folder; reused when labels.meta.json shows the same inputs."""
    path, meta_path = sweep_dir / "labels.jsonl", sweep_dir / "labels.meta.json"
    key = labels_key(setting)
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        return path
    if setting.teacher.kind != "scripted":
        raise ValueError(f"teacher kind {setting.teacher.kind!r} is not supported yet")
    rows = scripted_labels(setting)
    write_jsonl(path, rows)
    write_json(meta_path, {"key": key, "teacher": setting.teacher.kind, "n": len(rows)})
    log(f"[labels] {len(rows)} teacher labels -> {path}")
    return path


def read_labels(path: Path) -> list[dict[str, str]]:
    rows = read_jsonl(path)
    for i, row in enumerate(rows, start=1):
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{path}:{i}: field {key!r} is missing or empty")
    if not rows:
        raise DataError(f"{path} holds no labels")
    return rows
