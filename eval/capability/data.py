"""Benchmark items from local files, in each benchmark's published format; never a network fetch.

A benchmark's files are looked up in `<data_dir>/<benchmark>/` (a folder, searched recursively) and then in the
Hugging Face hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) under the
benchmark's dataset repo. When neither holds them, `DatasetMissingError` says what to download and where.

Formats read:
- mmlu: the original per-subject CSVs (`<subject>_test.csv`: question, A, B, C, D, answer letter; no header), or
  the hub's parquet/jsonl with columns question, subject, choices, answer (0-based index).
- ifeval: jsonl/parquet with key, prompt, instruction_id_list, kwargs.
- olympiads: jsonl/parquet with problem, solution, answer (answer may be empty: then the solution's last \\boxed{}).
- followbench: jsonl/json/parquet with instruction and level (example_id, category optional).
The toy probe needs no files (eval.toy_probe).
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval import toy_probe
from eval.capability import ifeval
from eval.capability.scoring import LETTERS, Item, extract_boxed, mmlu_prompt, olympiad_prompt
from eval.errors import UserError

HUB_REPOS = {"mmlu": "cais/mmlu", "ifeval": "google/IFEval", "olympiads": "Metaskepsis/Olympiads",
             "followbench": "YuxinJiang/FollowBench"}
FORMATS = {
    "mmlu": "the original CSVs (data/test/<subject>_test.csv) or the hub's parquet (all/test-*.parquet)",
    "ifeval": "a jsonl with key, prompt, instruction_id_list, kwargs",
    "olympiads": "a jsonl or parquet with problem, solution, answer",
    "followbench": "a jsonl with instruction, level (and example_id, category)",
}
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class DatasetMissingError(UserError, FileNotFoundError):
    """A benchmark's files are not on this machine; the message says what to download and where."""


class DatasetFormatError(UserError, ValueError):
    """A benchmark file that is not in the expected format; the message names the file and the columns."""


def hub_cache_dirs() -> list[Path]:
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"])]
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return [home / "hub"]


def _hub_snapshot(benchmark: str) -> Path | None:
    repo = HUB_REPOS[benchmark]
    for cache in hub_cache_dirs():
        snaps = sorted((cache / f"datasets--{repo.replace('/', '--')}" / "snapshots").glob("*"),
                       key=lambda p: p.stat().st_mtime)
        for snap in reversed(snaps):
            if _data_files(snap):
                return snap
    return None


def _data_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix in SUFFIXES else []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))


def find_dataset(benchmark: str, data_dir: str | os.PathLike | None) -> Path:
    """The folder (or file) that holds a benchmark's data, or DatasetMissingError naming the fix."""
    if benchmark not in HUB_REPOS:
        raise ValueError(f"{benchmark!r} has no dataset files; benchmarks with files: {sorted(HUB_REPOS)}")
    looked = []
    if data_dir is not None:
        local = Path(data_dir).expanduser() / benchmark
        looked.append(str(local))
        if local.exists() and _data_files(local):
            return local
    snap = _hub_snapshot(benchmark)
    if snap is not None:
        return snap
    looked += [str(c / f"datasets--{HUB_REPOS[benchmark].replace('/', '--')}") for c in hub_cache_dirs()]
    target = (Path(data_dir).expanduser() if data_dir is not None else Path("<capability.data_dir>")) / benchmark
    raise DatasetMissingError(
        f"{benchmark} data not found (looked in {', '.join(looked)}); nothing is downloaded at run time. Fetch it "
        f"once, e.g. `hf download {HUB_REPOS[benchmark]} --repo-type dataset --local-dir {target}`, "
        f"or put {FORMATS[benchmark]} under {target}")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a jsonl, json (a list), or parquet file."""
    if path.suffix == ".parquet":
        import pandas as pd

        return [{k: _plain(v) for k, v in r.items()} for r in pd.read_parquet(path).to_dict("records")]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise DatasetFormatError(f"{path}: expected a JSON list of objects")
        return data
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetFormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    return rows


def _plain(v: Any) -> Any:
    """numpy arrays and scalars from parquet as Python lists and numbers."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _require(path: Path, rows: list[dict[str, Any]], columns: Sequence[str], benchmark: str) -> None:
    if not rows:
        raise DatasetFormatError(f"{path} holds no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DatasetFormatError(f"{path}: columns {missing} are missing (has {sorted(rows[0])}); {benchmark} "
                                 f"expects {FORMATS[benchmark]}")


def _records(root: Path, benchmark: str, columns: Sequence[str], split: str = "test") -> list[tuple[Path, dict]]:
    files = [p for p in _data_files(root) if p.suffix != ".csv"]
    if not files:
        raise DatasetFormatError(f"{root}: no jsonl/json/parquet files; {benchmark} expects {FORMATS[benchmark]}")
    named = [p for p in files if split in p.name]
    out = []
    for path in named or files:
        rows = read_records(path)
        _require(path, rows, columns, benchmark)
        out += [(path, r) for r in rows]
    return out


def load_mmlu(root: Path, split: str = "test") -> list[Item]:
    csvs = sorted(p for p in _data_files(root) if p.name.endswith(f"_{split}.csv"))
    items = []
    if csvs:
        for path in csvs:
            subject = path.name[: -len(f"_{split}.csv")]
            with path.open(encoding="utf-8", newline="") as fh:
                for i, row in enumerate(csv.reader(fh)):
                    if len(row) != 6 or row[5].strip() not in "ABCD":
                        raise DatasetFormatError(f"{path}:{i + 1}: expected question, A, B, C, D, answer letter")
                    items.append(Item("mmlu", f"{subject}/{i}", mmlu_prompt(row[0], row[1:5], subject),
                                      row[5].strip(), {"subject": subject, "choices": row[1:5]}))
        return items
    all_dir = [p for p in _data_files(root) if p.parent.name == "all" and split in p.name]
    source = all_dir[0].parent if all_dir else root  # the hub repo also has one folder per subject: read "all" once
    for n, (path, r) in enumerate(_records(source, "mmlu", ("question", "subject", "choices", "answer"), split)):
        choices, answer = list(r["choices"]), r["answer"]
        letter = LETTERS[int(answer)] if not isinstance(answer, str) else answer.strip()
        if letter not in LETTERS[: len(choices)]:
            raise DatasetFormatError(f"{path}: answer {answer!r} is not an option index of {len(choices)} choices")
        items.append(Item("mmlu", f"{r['subject']}/{n}", mmlu_prompt(r["question"], choices, r["subject"]), letter,
                          {"subject": r["subject"], "choices": choices}))
    return items


def load_ifeval(root: Path) -> list[Item]:
    recs = _records(root, "ifeval", ("key", "prompt", "instruction_id_list", "kwargs"), split="")
    items = []
    for path, r in recs:
        ids, kwargs = list(r["instruction_id_list"]), list(r["kwargs"])
        if len(ids) != len(kwargs):
            raise DatasetFormatError(f"{path}: key {r['key']}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
        items.append(Item("ifeval", str(r["key"]), r["prompt"], {"instruction_id_list": ids, "kwargs": kwargs}))
    return items


def load_olympiads(root: Path) -> list[Item]:
    items = []
    for n, (path, r) in enumerate(_records(root, "olympiads", ("problem", "solution"), split="")):
        answer = str(r.get("answer") or "").strip() or extract_boxed(str(r["solution"]))
        if not answer:
            raise DatasetFormatError(f"{path}: row {n} has no answer and no \\boxed{{}} in its solution")
        items.append(Item("olympiads", str(r.get("id", n)), olympiad_prompt(r["problem"]), answer))
    return items


def load_followbench(root: Path) -> list[Item]:
    items = []
    for n, (_, r) in enumerate(_records(root, "followbench", ("instruction", "level"), split="")):
        key = f"{r.get('category', 'x')}/{r.get('example_id', n)}/{r['level']}"
        items.append(Item("followbench", key, r["instruction"],
                          {"level": r["level"], "category": r.get("category"), "target": r.get("target")}))
    return items


def toy_probe_items() -> list[Item]:
    """The toy probe's items: word triples to reverse, none in the toy's corpus (split_items picks the
    evaluated subset)."""
    return [Item("toy_probe", it["id"], it["prompt"], it["answer"]) for it in toy_probe.items()]


LOADERS = {"mmlu": load_mmlu, "ifeval": load_ifeval, "olympiads": load_olympiads, "followbench": load_followbench}


def load_items(benchmark: str, data_dir: str | os.PathLike | None) -> list[Item]:
    """Every usable item of a benchmark. IFEval items with an instruction that has no check are dropped here (the
    caller reports how many: see `ifeval_unsupported`), so a subset is scored on checkable items only."""
    if benchmark == "toy_probe":
        return toy_probe_items()
    items = LOADERS[benchmark](find_dataset(benchmark, data_dir))
    if benchmark == "ifeval":
        items = [it for it in items if not ifeval.unsupported_ids(it.answer["instruction_id_list"])]
    if not items:
        raise DatasetFormatError(f"{benchmark}: no usable items")
    return items


def ifeval_unsupported(data_dir: str | os.PathLike | None) -> dict[str, int]:
    """Unsupported instruction id -> number of IFEval items that use it (what load_items drops)."""
    counts: dict[str, int] = {}
    for it in load_ifeval(find_dataset("ifeval", data_dir)):
        for iid in ifeval.unsupported_ids(it.answer["instruction_id_list"]):
            counts[iid] = counts.get(iid, 0) + 1
    return dict(sorted(counts.items()))


def split_items(items: Sequence[Item], n: int, seed: int) -> tuple[list[Item], list[Item]]:
    """(evaluation subset of n items, the rest): fixed by seed, disjoint, so recovery labels never come from
    the items they are judged on."""
    order = sorted(items, key=lambda it: it.item_id)
    random.Random(seed).shuffle(order)
    return order[:n], order[n:]
