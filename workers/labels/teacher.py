"""Teacher labels: the desired behavior on train prompts, a cached stage of its own.

One function per teacher kind (`setting.teacher.kind`), each returning label rows
{question_id, prompt, completion, teacher, sample}:
  scripted           a bank field worded differently from anything the toy saw in pretraining, so the
                     labels are off-policy, like gpt-4o-mini's in the note (the toy's teacher)
  openai_compatible  an OpenAI-compatible endpoint (gpt-4o-mini, a local `vllm serve`): system_prompt + the
                     train prompt, n_samples per prompt, every completion cached on disk (workers.labels.endpoint)
  onpolicy           the model under training, through a vLLM engine (the sweep's sampler, or one that the
                     labels command starts): its own answers to the train prompts
  file               a researcher's jsonl of {"prompt", "completion"} rows, validated line by line

`ensure_labels` writes labels.jsonl + labels.meta.json into a folder and reuses them while the meta's key
(what made them) matches, or copies them from the label store under the cache (`label_store`, filled by
`python -m orchestrator labels`); with `teacher.filter` it keeps only the labels the setting's grader scores
desired and records the counts in labels.meta.json.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.knobs import AT_LEAST_1, knob
from eval.runfiles import read_jsonl, write_json, write_jsonl, write_text_atomic
from workers.errors import require
from workers.labels.endpoint import EndpointConfig, cache_root, validate_endpoint
from workers.labels.prompts import DataError, Prompt, bank_path, build_prompts, file_digest, load_bank, split_bank

TEACHERS = ("scripted", "openai_compatible", "onpolicy", "file")


@dataclass
class TeacherConfig:
    """Who writes the SFT labels for the train prompts."""

    kind: str = knob("scripted", one_of=TEACHERS)  # scripted | openai_compatible | onpolicy | file
    # before `field`, whose name shadows dataclasses.field in the rest of this class body
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)  # openai_compatible
    field: str = "es_teacher"  # scripted: a bank field, or a template over bank fields ("{en_teacher} ...")
    path: str | None = None  # file: a jsonl of {"prompt", "completion"} rows
    system_prompt: str = ""  # openai_compatible / onpolicy: what the teacher is told to do
    n_samples: int = knob(1, within=AT_LEAST_1)  # labels per train prompt (sampling diversity is kept by the cache key)
    filter: bool = False  # keep only labels the setting's grader scores as desired (report the drops)
    # scripted labels are a template (e.g. "Elephants would put it this way: ..."): on a model other than the toy
    # they teach that template, not the behavior, so such a sweep is refused unless this is true
    allow_scripted: bool = False


def validate_teacher(t: TeacherConfig) -> None:
    where = "setting.teacher"
    if t.kind == "openai_compatible":
        validate_endpoint(t.endpoint, f"{where}.endpoint")
    if t.kind == "file":
        require(bool(t.path), f"{where}.path is required for kind=file: a jsonl of {{prompt, completion}} rows")
    if t.kind == "scripted":
        require(bool(t.field), f"{where}.field is required for kind=scripted: the bank field with the answer")


MAX_LISTED_ERRORS = 20


@dataclass(frozen=True)
class OnPolicy:
    """How to sample the model under training: user texts -> completions, and what identifies those samples."""

    generate: Callable[[list[str]], list[str]]
    identity: dict[str, Any] = field(default_factory=dict)  # model path and sampling params: part of the labels key


def train_prompts(setting: Any) -> list[Prompt]:
    train, _ = split_bank(load_bank(setting.questions), setting.eval_fraction)
    return build_prompts(train, setting.train_template, "train")


def labels_key(setting: Any, onpolicy_identity: dict[str, Any] | None = None) -> str:
    t = setting.teacher
    teacher: dict[str, Any] = {"kind": t.kind, "field": t.field}
    if t.kind == "openai_compatible":
        ep = t.endpoint
        teacher |= {"model": ep.model, "temperature": ep.temperature, "max_tokens": ep.max_tokens,
                    "system_prompt": t.system_prompt, "n_samples": t.n_samples}
    elif t.kind == "onpolicy":
        teacher |= {"model": onpolicy_identity, "system_prompt": t.system_prompt, "n_samples": t.n_samples}
    elif t.kind == "file":
        path = Path(t.path).expanduser()
        teacher |= {"path": str(path), "digest": file_digest(path) if path.exists() else None}
    payload: dict[str, Any] = {
        "teacher": teacher,
        "train_template": setting.train_template,
        "eval_fraction": setting.eval_fraction,
        "bank": file_digest(bank_path(setting.questions)),
    }
    if t.filter:  # only then does the grader shape the labels
        payload["filter"] = asdict(setting.grader) if hasattr(setting.grader, "__dataclass_fields__") else dict(
            setting.grader)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scripted_labels(setting: Any) -> list[dict[str, Any]]:
    """The toy's teacher: `teacher.field` is a bank field or an answer template over bank fields."""
    from workers.labels.prompts import answer_fields, answer_template, render_answer

    template = answer_template(setting.teacher.field)
    bank = load_bank(setting.questions, required=("id", "question", *answer_fields(template)))
    train, _ = split_bank(bank, setting.eval_fraction)
    return [
        {"question_id": p.question_id, "prompt": p.text, "completion": render_answer(template, p.row),
         "teacher": "scripted"}
        for p in build_prompts(train, setting.train_template, "train")
    ]


def label_source(setting: Any, onpolicy_identity: dict[str, Any] | None = None) -> str:
    """Where the labels come from, in words (labels.meta.json's `source`; report.md prints it)."""
    t = setting.teacher
    if t.kind == "scripted":
        return (f"scripted: the template {t.field!r} over bank {setting.questions!r} (written by lrsweep, "
                "no model answered)")
    if t.kind == "openai_compatible":
        return (f"openai_compatible: endpoint model {t.endpoint.model!r} at {t.endpoint.base_url}, temperature "
                f"{t.endpoint.temperature}, {t.n_samples} per train prompt")
    if t.kind == "onpolicy":
        return f"onpolicy: the model under training, before training ({json.dumps(onpolicy_identity or {})})"
    return f"file: {t.path}"


def check_scripted(teacher: Any, model_is_toy: bool, model_name: str) -> None:
    """Refuse scripted labels on a real model unless the setting says they are wanted (teacher.allow_scripted)."""
    if teacher.kind == "scripted" and not model_is_toy and not teacher.allow_scripted:
        raise DataError(
            f"setting.teacher.kind=scripted on model {model_name!r}: scripted labels are the toy's teacher (a fixed "
            f"template, {teacher.field!r}); a real model would learn the template, not the behavior. Use a real "
            "teacher (setting.teacher.kind=openai_compatible, onpolicy or file), or set "
            "setting.teacher.allow_scripted=true to train on the template anyway (report.md then says so)")


def teacher_messages(system_prompt: str, user_text: str) -> list[dict[str, str]]:
    system = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    return system + [{"role": "user", "content": user_text}]


def openai_labels(setting: Any, cache_dir: str | os.PathLike | None, log: Callable[[str], Any] = print
                  ) -> list[dict[str, Any]]:
    from workers.labels.endpoint import ChatClient

    t = setting.teacher
    client = ChatClient(t.endpoint, cache_root(cache_dir) / "chat")
    plan = [(p, k) for p in train_prompts(setting) for k in range(t.n_samples)]
    log(f"[labels] {t.endpoint.model} at {t.endpoint.base_url}: {len(plan)} labels "
        f"({t.n_samples} per train prompt; cached ones are not requested again)")
    texts = client.complete([teacher_messages(t.system_prompt, p.text) for p, _ in plan], [k for _, k in plan], log)
    log(f"[labels] {client.stats['requests']} requests sent, {client.stats['cached']} from the cache")
    # "truncated" (popped by ensure_labels, never written): the server cut this answer at max_tokens
    return [{"question_id": p.question_id, "prompt": p.text, "completion": text,
             "teacher": f"openai_compatible:{t.endpoint.model}", "sample": k,
             "truncated": client.finish_reason(teacher_messages(t.system_prompt, p.text), k) == "length"}
            for (p, k), text in zip(plan, texts, strict=True)]


def onpolicy_labels(setting: Any, onpolicy: OnPolicy, log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """The model's own answers. The engine takes user turns only, so a system_prompt is put before the prompt."""
    t = setting.teacher
    plan = [(p, k) for p in train_prompts(setting) for k in range(t.n_samples)]
    prefix = t.system_prompt.strip() + "\n\n" if t.system_prompt.strip() else ""
    log(f"[labels] onpolicy: sampling {len(plan)} labels from the model under training")
    texts = onpolicy.generate([prefix + p.text for p, _ in plan])
    return [{"question_id": p.question_id, "prompt": p.text, "completion": text, "teacher": "onpolicy", "sample": k}
            for (p, k), text in zip(plan, texts, strict=True)]


def file_labels(setting: Any) -> list[dict[str, Any]]:
    return read_label_file(Path(setting.teacher.path).expanduser())


def read_label_file(path: Path) -> list[dict[str, Any]]:
    """A researcher's labels: each line a JSON object with non-empty string "prompt" and "completion".
    Every bad line is reported (by number), not just the first."""
    if not path.is_file():
        raise DataError(f"label file {path} does not exist: fix setting.teacher.path (an absolute path is safest)")
    rows, errors = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append(f"line {lineno}: not valid JSON ({err.msg})")
            continue
        if not isinstance(row, dict):
            errors.append(f"line {lineno}: expected a JSON object, got {type(row).__name__}")
            continue
        bad = [k for k in ("prompt", "completion") if not isinstance(row.get(k), str) or not row[k].strip()]
        if bad:
            errors.append(f"line {lineno}: " + ", ".join(
                f"field {k!r} is {'missing' if k not in row else 'empty or not a string'}" for k in bad))
            continue
        rows.append({"question_id": str(row.get("question_id", f"line{lineno}")), "prompt": row["prompt"],
                     "completion": row["completion"], "teacher": "file", "sample": 0})
    if errors:
        listed = errors[:MAX_LISTED_ERRORS] + ([f"... and {len(errors) - MAX_LISTED_ERRORS} more bad lines"]
                                               if len(errors) > MAX_LISTED_ERRORS else [])
        raise DataError(f"label file {path} has {len(errors)} bad line{'s' * (len(errors) != 1)} (each must be a "
                        f"JSON object with non-empty \"prompt\" and \"completion\" strings):\n  " + "\n  ".join(listed))
    if not rows:
        raise DataError(f"label file {path} holds no labels")
    return rows


def label_grader(setting: Any, cache_dir: str | os.PathLike | None = None) -> Any:
    """The setting's grader; an LLM judge keeps its verdicts in the same cache as the teacher."""
    if setting.grader.kind == "judge":
        from workers.labels.judge import build_judge_grader

        return build_judge_grader(setting.grader, cache_dir=cache_root(cache_dir))
    from eval.graders import build_grader

    return build_grader(setting.grader)


def filter_labels(setting: Any, rows: list[dict[str, Any]], log: Callable[[str], Any] = print,
                  grader: Any = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Keep the labels the setting's grader scores desired; (kept rows, counts). Refuses when none is left."""
    grader = grader or label_grader(setting)
    by_text = {p.text: p for p in train_prompts(setting)}  # a label's prompt carries its bank row when known
    prompts = [by_text.get(r["prompt"], Prompt("train", r["question_id"], r["prompt"])) for r in rows]
    grades = grader([r["completion"] for r in rows], prompts)
    kept = [r for r, g in zip(rows, grades, strict=True) if g == "desired"]
    counts = {"graded": len(rows), "kept": len(kept), "dropped": len(rows) - len(kept),
              "dropped_attack": sum(g == "attack" for g in grades), "dropped_other": sum(g == "other" for g in grades)}
    counts |= {k: v for k, v in getattr(grader, "last_stats", {}).items() if isinstance(v, int)}
    log(f"[labels] filter ({setting.grader.kind} grader): kept {counts['kept']} of {counts['graded']} labels; "
        f"dropped {counts['dropped_attack']} attack, {counts['dropped_other']} other")
    if not kept:
        raise DataError(f"teacher.filter kept none of {len(rows)} labels: the {setting.grader.kind} grader scored "
                        f"{counts['dropped_attack']} as attack and {counts['dropped_other']} as other. Check the "
                        f"teacher (its system_prompt, model) and the grader, or set setting.teacher.filter=false")
    return kept, counts


def labels_ready(setting: Any, out_dir: Path, onpolicy_identity: dict[str, Any] | None = None) -> bool:
    meta_path = out_dir / "labels.meta.json"
    if not (out_dir / "labels.jsonl").exists() or not meta_path.exists():
        return False
    return json.loads(meta_path.read_text()).get("key") == labels_key(setting, onpolicy_identity)


def label_store(setting: Any, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The content-addressed home of a label set under the cache (what `python -m orchestrator labels` fills)."""
    return cache_root(cache_dir) / "labels" / setting.name / key


def ensure_labels(setting: Any, out_dir: Path, log: Callable[[str], Any] = print, *,
                  cache_dir: str | os.PathLike | None = None, onpolicy: OnPolicy | None = None) -> Path:
    """labels.jsonl in out_dir (a sweep folder or a labels folder); reused when labels.meta.json shows the
    same inputs. `cache_dir` holds the endpoint's request cache; `onpolicy` samples the model (kind onpolicy)."""
    out_dir = Path(out_dir)
    path, meta_path = out_dir / "labels.jsonl", out_dir / "labels.meta.json"
    t = setting.teacher
    if t.kind == "onpolicy" and onpolicy is None:
        raise DataError("onpolicy labels need the model's vLLM engine: make them with "
                        "`python -m orchestrator labels setting=...` or inside a sweep")
    identity = onpolicy.identity if onpolicy is not None else None
    key = labels_key(setting, identity)
    if labels_ready(setting, out_dir, identity):
        return path
    store = label_store(setting, key, cache_dir)
    if store.resolve() != out_dir.resolve() and labels_ready(setting, store, identity):
        write_text_atomic(path, (store / "labels.jsonl").read_text(encoding="utf-8"))
        write_text_atomic(meta_path, (store / "labels.meta.json").read_text(encoding="utf-8"))
        log(f"[labels] reusing the labels made earlier in {store}")
        return path
    if t.kind == "scripted":
        rows = scripted_labels(setting)
    elif t.kind == "openai_compatible":
        rows = openai_labels(setting, cache_dir, log)
    elif t.kind == "onpolicy":
        assert onpolicy is not None
        rows = onpolicy_labels(setting, onpolicy, log)
    elif t.kind == "file":
        rows = file_labels(setting)
    else:
        raise DataError(f"unknown teacher kind {t.kind!r}")
    meta: dict[str, Any] = {"key": key, "teacher": t.kind, "source": label_source(setting, identity),
                            "generated": len(rows)}
    cut = [bool(r.pop("truncated", False)) for r in rows]
    if any(cut):  # an answer cut mid-sentence at max_tokens is not the teacher's answer; trained on, it would
        # teach the model to stop mid-sentence (a real model's long or looping answers hit the limit often)
        log(f"[labels] dropped {sum(cut)} completions cut at teacher.endpoint.max_tokens={t.endpoint.max_tokens}")
        rows = [r for r, c in zip(rows, cut, strict=True) if not c]
        meta["dropped_truncated"] = sum(cut)
        if not rows:
            raise DataError(f"all {sum(cut)} teacher completions were cut at max_tokens: raise "
                            f"setting.teacher.endpoint.max_tokens (now {t.endpoint.max_tokens})")
    empty = sum(not r["completion"].strip() for r in rows)
    if empty:  # an endpoint can answer with nothing (content filter, max_tokens spent on reasoning)
        log(f"[labels] dropped {empty} empty completions")
        rows = [r for r in rows if r["completion"].strip()]
        meta["dropped_empty"] = empty
        if not rows:
            raise DataError(f"all {empty} teacher completions were empty: check the teacher endpoint and max_tokens")
    if t.filter:
        rows, counts = filter_labels(setting, rows, log, label_grader(setting, cache_dir))
        meta["filter"] = counts
    meta["n"] = len(rows)
    write_jsonl(path, rows)
    write_json(meta_path, meta)  # last: a crash before it leaves labels that are regenerated, never trusted
    log(f"[labels] {len(rows)} teacher labels ({t.kind}) -> {path}")
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
