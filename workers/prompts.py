"""Question banks, the train/eval split and prompt formatting: pure functions, no heavy imports."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BANK_DIR = Path(__file__).resolve().parent / "data" / "questions"


class DataError(ValueError):
    """Malformed data on disk; the message names the file and the line."""


@dataclass(frozen=True)
class Prompt:
    """One prompt shown to the model: which split, which question, and the rendered user text."""

    split: str  # "train" | "eval"
    question_id: str
    text: str
    row: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the bank row (graders read it)


def bank_path(source: str) -> Path:
    """A bank name (a file in workers/data/questions/) or an absolute path to a jsonl file."""
    path = Path(source).expanduser()
    if path.is_absolute():
        return path
    path = BANK_DIR / f"{source}.jsonl"
    if not path.exists():
        known = sorted(p.stem for p in BANK_DIR.glob("*.jsonl"))
        raise DataError(f"unknown question bank {source!r}: known banks are {known}, or give an absolute path")
    return path


def load_bank(source: str, required: tuple[str, ...] = ("id", "question")) -> list[dict[str, Any]]:
    """Read a jsonl bank; every line must be an object holding `required` fields with non-empty strings."""
    path = bank_path(source)
    if not path.exists():
        raise DataError(f"question bank {path} does not exist")
    rows, seen = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        for key in required:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{path}:{lineno}: field {key!r} is missing or empty")
        if row["id"] in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise DataError(f"question bank {path} is empty")
    return rows


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def is_eval_question(question_id: str, eval_fraction: float) -> bool:
    """Stable split by hashed id: adding questions to a bank never moves existing ones."""
    bucket = int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < eval_fraction


def split_bank(bank: list[dict[str, Any]], eval_fraction: float) -> tuple[list[dict], list[dict]]:
    """(train questions, eval questions), disjoint; refuses a split that leaves one side empty."""
    train = [q for q in bank if not is_eval_question(q["id"], eval_fraction)]
    evals = [q for q in bank if is_eval_question(q["id"], eval_fraction)]
    if not train or not evals:
        raise DataError(f"eval_fraction={eval_fraction} leaves an empty split of {len(bank)} questions")
    return train, evals


def render(template: str, question: str) -> str:
    return template.replace("{question}", question)


def build_prompts(questions: list[dict], template: str, split: str) -> list[Prompt]:
    return [Prompt(split=split, question_id=q["id"], text=render(template, q["question"]), row=q) for q in questions]


def pick(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """n prompts drawn without replacement while possible, then cycled: fixed across checkpoints."""
    order = list(prompts)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def chat_messages(user_text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user_text}]


def format_for_model(tokenizer: Any, user_text: str, chat_template_kwargs: dict | None = None) -> str:
    """The exact text fed to the model (training and sampling share it), via the tokenizer's chat template."""
    return tokenizer.apply_chat_template(
        chat_messages(user_text), tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )
