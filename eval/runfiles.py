"""The run-folder contract: plain files that resume, analysis and reports read (never Ray objects).

<sweep_dir>/
  config.yaml            resolved config (no secrets)
  labels.jsonl           teacher labels (+ labels.meta.json: what made them)
  trials/<name>/config.json, metrics.jsonl, samples/step_XXXXX.jsonl, adapters/step_XXXXX/
  trials/<name>/result.json (it finished) or error.json (it failed for good: last error line, full error's file)
  trials/<name>/failed.json (it ended on an error a retry would repeat), attempts.jsonl, state/
  summary.json, curves.csv, attack_rate_vs_step.png
SweepDir and TrialDir spell these paths once; code asks them for a path instead of joining names by hand.
Every file is written atomically (temporary file, then rename), so a crash never leaves half a file.
The rows of metrics.jsonl are typed, with one reader per kind (eval_rows, ...), in eval/rows.py: a leaf module,
because the analysis reads them and this module's load_sweep uses the analysis.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def build_lock(final: Path, log: Any = print) -> Iterator[None]:
    """Hold an exclusive lock on `final`'s build (a cached model or organism) while the block runs, so two
    processes that share a cache (two sweeps, two test workers) build it once: the second waits, then finds it
    built. The lock is a file beside `final`; the kernel drops it when its holder dies."""
    import fcntl

    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[cache] another process is building {final}; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_built(final: Path, marker: str, build: Callable[[], None], log: Any = print) -> Path:
    """`final`, running `build()` first unless `final/marker` exists; under build_lock, so processes sharing a
    cache build it once (the check is repeated once the lock is held: another process may have built it)."""
    if not (final / marker).exists():
        with build_lock(final, log):
            if not (final / marker).exists():
                build()
    return final


def publish_dir(built: Path, final: Path, marker: str) -> None:
    """Rename a finished build folder into place (cached models, organisms). When another process finished the
    same build first, its folder (the one holding `marker`) is kept and this one is left for the caller to remove."""
    try:
        built.rename(final)
    except OSError:
        if not (final / marker).exists():
            raise


def current_umask() -> int:
    """The process's umask: from /proc on Linux (no change to it, so threads writing files are safe), else by
    setting it and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename. mkstemp makes its file 0600; the file gets the permissions any
    open() would give it (0666 less the umask), so teammates on a group's shared storage can read a sweep."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


SORTED_NAME = re.compile(r"lr\d+\.\d{6,}_seed\d+")  # trial_name's form; older sweeps wrote lr{lr:.3g}_seed{seed}


def trial_name(lr: float, seed: int, sweep_dir: Path | str | None = None) -> str:
    """A trial's folder name, in fixed-point with 6 decimals so that names sort by LR (lr0.000030_seed0 before
    lr0.001000_seed0; finer LRs get the decimals that keep 3 significant digits). Given its sweep folder, a trial of
    an older sweep keeps the name it was written under (lr3e-05_seed0), so resume and status still find it."""
    text = f"{lr:.6f}"
    if abs(float(text) - lr) > 1e-3 * lr:  # finer than 6 decimals show
        text = f"{lr:.{2 - math.floor(math.log10(lr))}f}"
    name = f"lr{text}_seed{seed}"
    trials = Path(sweep_dir) / "trials" if sweep_dir is not None else None
    if trials is None or (trials / name).exists():
        return name
    legacy = f"lr{lr:.3g}_seed{seed}"
    older = trials.is_dir() and any(not SORTED_NAME.fullmatch(d.name) for d in trials.glob("lr*_seed*"))
    return legacy if (trials / legacy).exists() or older else name


STEP_FILE = re.compile(r"step_(\d+)")


def step_of(path: Path | str) -> int:
    """The step a checkpoint's file or folder is named for (step_00008, step_00008.jsonl -> 8)."""
    match = STEP_FILE.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named for a step (step_XXXXX)")
    return int(match.group(1))


@dataclass(frozen=True)
class TrialDir:
    """One trial's folder (trials/<name>/): each file's path, spelled here only."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def result(self) -> Path:
        """Written when the trial finished."""
        return self.path / "result.json"

    @property
    def error(self) -> Path:
        """Written by the sweep driver when the trial failed for good (record_error)."""
        return self.path / "error.json"

    @property
    def failed(self) -> Path:
        """Written by the trial when it ended on an error a retry would repeat (a refused adapter, a bad config)."""
        return self.path / "failed.json"

    @property
    def attempts(self) -> Path:
        return self.path / "attempts.jsonl"

    @property
    def state(self) -> Path:
        """The trainer's state (a lone trial's; a pack keeps its state in its first member's folder)."""
        return self.path / "state"

    @property
    def adapters(self) -> Path:
        return self.path / "adapters"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    def adapter(self, step: int) -> Path:
        return self.adapters / step_name(step)

    def samples(self, step: int) -> Path:
        return self.samples_dir / f"{step_name(step)}.jsonl"

    def finished(self) -> bool:
        return self.result.exists()

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics)

    def record_error(self, error: str, error_file: str | None) -> dict[str, Any]:
        """error.json: the trial failed for good; what the error said and where its full text is."""
        err = {"error": error, "error_file": error_file, "recorded": time.time()}
        write_json(self.error, err)
        return err


@dataclass(frozen=True)
class SweepDir:
    """A sweep's folder: its files and its trials' folders."""

    path: Path

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    def trial(self, lr: float, seed: int) -> TrialDir:
        """The trial of (lr, seed), under the name this sweep folder uses (trial_name)."""
        return TrialDir(self.trials_dir / trial_name(lr, seed, self.path))

    def named(self, name: str) -> TrialDir:
        return TrialDir(self.trials_dir / name)

    def trials(self) -> list[TrialDir]:
        """Every trial folder that has a config.json, in name order."""
        return [TrialDir(p.parent) for p in sorted(self.trials_dir.glob("*/config.json"))]


LATEST = "latest"


def link_latest(sweep_dir: Path, setting: str) -> Path | None:
    """Point `sweeps/<setting>/latest` at this sweep folder (a relative link, swapped in atomically by a rename),
    so `status sweeps/<setting>/latest` finds the newest sweep. Only in that layout (a folder chosen with
    hydra.run.dir elsewhere gets none), and a `latest` that is not a link is left alone: None then."""
    link = sweep_dir.parent / LATEST
    if sweep_dir.parent.name != setting or (link.exists() and not link.is_symlink()):
        return None
    tmp = sweep_dir.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(sweep_dir.name, target_is_directory=True)
    os.replace(tmp, link)
    return link


def load_trials(sweep_dir: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(trial config, metrics rows) for every trial folder that has a config.json."""
    return [(json.loads(t.config.read_text()), t.rows()) for t in SweepDir(Path(sweep_dir)).trials()]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is absent or torn."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_trial_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Everything a trial folder says about its outcome: config.json, metrics.jsonl rows, error.json (written by the
    sweep driver when the trial failed for good) and whether result.json (written when it finished) exists."""
    return [{"config": json.loads(t.config.read_text()), "rows": t.rows(), "error": read_json(t.error),
             "finished": t.finished()} for t in SweepDir(Path(sweep_dir)).trials()]


TRIAL_COLUMNS = ("sweep", "sweep_id", "setting", "model", "trial", "lr", "seed", "max_steps", "threshold", "status",
                 "steps_to_transfer", "lower_bound", "collapse")


def load_sweep(path: str | os.PathLike | Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One tidy row per (trial, step, kind) of every metrics.jsonl row (kind eval, train, capability, stop; a
    capability row per benchmark), with the trial's setting, lr, seed, its outcome from eval.analysis (status,
    steps_to_transfer, lower_bound, collapse) and every metric as a column. From the run files alone; give several
    sweep folders (a list) to get them concatenated. Trials with no rows at all (failed before any checkpoint) are
    absent here; summary.json lists them."""
    import pandas as pd

    from eval.analysis import analyze_trial

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    rows: list[dict[str, Any]] = []
    for p in paths:
        sweep = Path(p).expanduser().resolve()
        records = load_trial_records(sweep)
        if not records:
            raise ValueError(f"{sweep} is not a sweep folder (no trials/*/config.json in it)")
        for rec in records:
            cfg = rec["config"]
            t = analyze_trial(cfg, rec["rows"], float(cfg.get("threshold", 0.5)), error=rec["error"],
                              finished=rec["finished"])
            base = {"sweep": str(sweep), "sweep_id": cfg.get("sweep_id"), "setting": cfg["setting"],
                    "model": cfg.get("model"), "trial": cfg["name"], "lr": float(cfg["lr"]), "seed": int(cfg["seed"]),
                    "max_steps": int(cfg["max_steps"]), "threshold": float(cfg.get("threshold", 0.5)),
                    "status": t.status, "steps_to_transfer": t.steps_to_transfer, "lower_bound": t.lower_bound,
                    "collapse": t.collapse}
            latest: dict[tuple[Any, ...], dict[str, Any]] = {}  # a resumed trial may repeat a row: the last wins
            for r in rec["rows"]:
                latest[(int(r["step"]), r.get("kind", "eval"), r.get("benchmark"))] = r
            for r in latest.values():
                rows.append(base | {k: v for k, v in r.items() if k not in base} | {"kind": r.get("kind", "eval")})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*TRIAL_COLUMNS, "step", "kind"])
    first = [*TRIAL_COLUMNS, "step", "kind"]
    df = df[first + sorted(c for c in df.columns if c not in first)]
    for col in ("steps_to_transfer", "lower_bound"):
        df[col] = df[col].astype("Int64")  # null stays null (not NaN-as-float): no value, not a number
    return df.sort_values(["sweep", "setting", "lr", "seed", "step", "kind"], kind="stable").reset_index(drop=True)


def write_curves_csv(sweep_dir: Path) -> Path:
    """curves.csv beside summary.json: load_sweep(sweep_dir) as CSV, for spreadsheets and other languages."""
    path = Path(sweep_dir) / "curves.csv"
    write_text_atomic(path, load_sweep(sweep_dir).to_csv(index=False))
    return path
