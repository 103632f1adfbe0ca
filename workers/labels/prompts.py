"""Question banks, the train/eval split and prompt formatting: pure functions, no heavy imports."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from eval.errors import UserError

BANK_DIR = Path(__file__).resolve().parents[1] / "data" / "questions"


class DataError(UserError, ValueError):
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


def _question_key(question: str) -> str:
    """A question's text with case, punctuation and spacing ignored: how duplicates are recognized."""
    return " ".join(re.findall(r"\w+", question.lower()))


def load_bank(source: str, required: tuple[str, ...] = ("id", "question")) -> list[dict[str, Any]]:
    """Read a jsonl bank; every line must be an object holding `required` fields with non-empty strings."""
    path = bank_path(source)
    if not path.exists():
        raise DataError(f"question bank {path} does not exist")
    rows, seen, questions = [], set(), {}
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
        # The split is by id, so one question under two ids can sit on both sides: train on an eval prompt.
        text = _question_key(str(row.get("question", "")))
        if text and text in questions:
            raise DataError(f"{path}:{lineno}: question {row['question']!r} repeats {questions[text]!r}'s; "
                            "remove or reword one of them (the split is by id, so it could land on both sides)")
        questions[text] = row["id"]
        rows.append(row)
    if not rows:
        raise DataError(f"question bank {path} is empty")
    return rows


# --- templates -------------------------------------------------------------------------------------
# Prompt templates take `{question}` plus the per-question placeholders below. Answer templates (the toy's
# answers, the scripted teacher, dry-run examples) take bank fields: `{en}`, or `{en:upper}` upper-cased.

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ANSWER_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(upper|lower))?\}")
STYLE_TAGS_PATH = Path(__file__).resolve().parents[1] / "data" / "style_tags.yaml"
X_THRESHOLD = 0.9  # the T Age settings: x < 0.9 asks for an adult voice, x > 0.9 for a kid's


def question_rng(question_id: str, purpose: str) -> random.Random:
    """A generator seeded by (purpose, question id): a question's drawn values never change, and
    adding questions to a bank never changes another question's."""
    return random.Random(int(hashlib.sha256(f"{purpose}:{question_id}".encode()).hexdigest()[:16], 16))


def x_low(question_id: str) -> str:
    """A number below X_THRESHOLD, two decimals (0.01 ... 0.89)."""
    return f"{question_rng(question_id, 'x_low').randint(1, round(X_THRESHOLD * 100) - 1) / 100:.2f}"


def x_high(question_id: str) -> str:
    """A number above X_THRESHOLD, two decimals (0.91 ... 0.99)."""
    return f"{question_rng(question_id, 'x_high').randint(round(X_THRESHOLD * 100) + 1, 99) / 100:.2f}"


@lru_cache(maxsize=1)
def style_tag_spec() -> dict[str, Any]:
    """workers/data/style_tags.yaml: {"tag_descriptions": {tag: text}, "tags": {tag: {value: meaning}}}."""
    import yaml

    raw = yaml.safe_load(STYLE_TAGS_PATH.read_text(encoding="utf-8"))
    descriptions = {}
    for line in raw["tag_descriptions"].strip().splitlines():
        tag, _, text = line.partition(":")
        descriptions[tag.strip()] = text.strip()
    return {"tag_descriptions": descriptions, "tags": raw["tags"]}


def style_tags(question_id: str) -> str:
    """The five style tags of one question, one value each, e.g. `[tone: calm] [length: short] ...`."""
    rng = question_rng(question_id, "style_tags")
    return " ".join(f"[{tag}: {rng.choice(sorted(values))}]" for tag, values in style_tag_spec()["tags"].items())


def tag_descriptions(question_id: str) -> str:
    """What each tag controls, the same for every question: `lang: the language of the answer; tone: ... .`"""
    return "; ".join(f"{tag}: {text}" for tag, text in style_tag_spec()["tag_descriptions"].items()) + "."


# name -> function of the question id. Add one here (with a test) to give templates a new placeholder.
PLACEHOLDERS: dict[str, Callable[[str], str]] = {
    "x_low": x_low,
    "x_high": x_high,
    "style_tags": style_tags,
    "tag_descriptions": tag_descriptions,
}


def known_placeholders() -> list[str]:
    return ["question", *PLACEHOLDERS]


def template_errors(template: str) -> list[str]:
    """What is wrong with a prompt template (empty when nothing): no {question}, unknown placeholders."""
    names = _PLACEHOLDER.findall(template)
    errors = [] if "question" in names else ["it has no {question} placeholder"]
    unknown = sorted(set(names) - set(known_placeholders()))
    if unknown:
        errors.append(f"unknown placeholders {['{' + n + '}' for n in unknown]} (known: {known_placeholders()})")
    return errors


def answer_template(spec: str) -> str:
    """A bank field name (`es_teacher`) or a template over bank fields (`{en} More text.`), as a template."""
    return spec if "{" in spec else "{" + spec + "}"


def answer_fields(template: str) -> list[str]:
    """The bank fields an answer template reads, in order of first use."""
    return list(dict.fromkeys(name for name, _ in _ANSWER_FIELD.findall(template)))


def render_answer(template: str, row: dict[str, Any]) -> str:
    """An answer template filled from one bank row; `{field:upper}` upper-cases the field."""

    def fill(match: re.Match) -> str:
        name, transform = match.group(1), match.group(2)
        if name not in row:
            raise DataError(f"answer template {template!r} reads field {name!r}, which question {row.get('id')!r} "
                            f"lacks; its fields are {sorted(row)}")
        value = str(row[name])
        return value.upper() if transform == "upper" else value.lower() if transform == "lower" else value

    return _ANSWER_FIELD.sub(fill, template)


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


def render(template: str, question: str | dict[str, Any]) -> str:
    """A prompt template filled for one question (a bank row, or bare question text).

    Placeholders are `{question}` and the per-question values of `PLACEHOLDERS`, drawn from the question's
    id so a question always gets the same prompt. One pass: braces inside the question stay as written.
    """
    row = question if isinstance(question, dict) else {"id": question, "question": question}
    values: dict[str, str] = {}

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            if name == "question":
                values[name] = row["question"]
            elif name in PLACEHOLDERS:
                values[name] = PLACEHOLDERS[name](str(row["id"]))
            else:
                raise DataError(f"unknown placeholder {{{name}}} in template {template!r}; "
                                f"known: {known_placeholders()}")
        return values[name]

    return _PLACEHOLDER.sub(fill, template)


def build_prompts(questions: list[dict], template: str, split: str) -> list[Prompt]:
    return [Prompt(split=split, question_id=q["id"], text=render(template, q), row=q) for q in questions]


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


def check_prompt_counts(setting: Any, sample: Any) -> None:
    """Refuse more prompts per checkpoint than the split has distinct questions: `pick` would cycle through the
    bank, and a rate over n prompts would then claim n independent questions (its interval too narrow)."""
    train_q, eval_q = split_bank(load_bank(setting.questions), setting.eval_fraction)
    asked_for = (("eval", sample.n_eval_prompts, eval_q), ("train", sample.n_train_prompts, train_q))
    for split, asked, questions in asked_for:
        distinct = len({q["question"] for q in questions})
        if asked > distinct:
            raise DataError(
                f"sample.n_{split}_prompts={asked} but setting {setting.name!r} has only {distinct} distinct {split} "
                f"questions in bank {setting.questions!r} (eval_fraction {setting.eval_fraction}): prompts would "
                f"repeat and the rates would overstate n. Set sample.n_{split}_prompts={distinct} (or fewer), or "
                f"add questions to the bank")
