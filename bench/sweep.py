"""The whole toy sweep (4 LRs), timed end to end: cold and warm, with and without the `fast` preset.

    python bench/sweep.py                                  # all four runs (about 12 minutes on 2 cores)
    python bench/sweep.py --runs default-warm,fast-warm    # some of them; results merge into the file
    python bench/sweep.py --runs default-warm --overrides sweep.max_steps=2 --out /tmp/s.json   # smoke size

warm: the toy model organism is already in LRSWEEP_CACHE; cold: a fresh empty cache, so the toy is built first.
Each run is `python -m orchestrator sweep setting=wronglang_spanish [sweep=fast]` in a subprocess. The script
reads the run folder afterwards: steps trained per trial (early stopping saves steps), and the trainer's time
breakdown (bench/trainer.py), into bench/results/sweep_cpu.json and bench/results/trainer_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PRESETS = {"default": [], "fast": ["sweep=fast"]}


def run_sweep(preset: str, cold: bool, overrides: list[str], timeout: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"lrsweep-bench-{preset}-"))
    env = dict(os.environ)
    if cold:
        env["LRSWEEP_CACHE"] = str(work / "cache")
    args = [sys.executable, "-m", "orchestrator", "sweep", "setting=wronglang_spanish", *PRESETS[preset],
            *overrides, f"hydra.run.dir={work / 'run'}"]
    started = time.time()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"dir": work, "wall": wall, "started": started, "stdout": proc.stdout}


def describe(preset: str, cold: bool, overrides: list[str], run: dict[str, Any]) -> dict[str, Any]:
    from bench.trainer import summarize

    sweep_dir = run["dir"] / "run"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    results = {p.parent.name: json.loads(p.read_text()) for p in (sweep_dir / "trials").glob("*/result.json")}
    trials = list(results.values())
    toy = re.search(r"toy model organism \(key ([0-9a-f]{16})\)", run["stdout"])
    ready = re.search(r"\[sampler\] ready after (\d+)s", run["stdout"])
    built = re.search(r"\[toy\] built in (\d+)s", run["stdout"])
    batching = re.search(r"\[sampler\] (\d+) requests in (\d+) engine calls \(at most (\d+)", run["stdout"])
    first, last = min(t["started"] for t in trials), max(t["ended"] for t in trials)
    return {
        "command": " ".join(["python -m orchestrator sweep setting=wronglang_spanish", *PRESETS[preset], *overrides]),
        "cache": "fresh empty LRSWEEP_CACHE (toy built first)" if cold else "toy cached",
        "wall_s": round(run["wall"], 1),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
        "toy_build_s": int(built.group(1)) if built else None,
        "sampler_ready_after_s": int(ready.group(1)) if ready else None,
        "before_first_trial_s": round(first - run["started"], 1),  # interpreter, Ray, toy, labels, engine, Tune
        "trials_span_s": round(last - first, 1),
        "after_last_trial_s": round(run["started"] + run["wall"] - last, 1),  # summary, plot, report, shutdown
        "sampler_requests_engine_calls_max_batch": [int(x) for x in batching.groups()] if batching else None,
        "steps_trained": sum(t["steps_trained"] for t in trials),
        "steps_max": sum(s["max_steps"] for s in summary),
        "trials": [{"lr": s["lr"], "steps_to_transfer": s["steps_to_transfer"], "stopped_early": s["stopped_early"],
                    "stop_reason": s["stop_reason"], "stop_step": s["stop_step"],
                    "steps_trained": results[s["trial"]]["steps_trained"], "eval_curve": s["eval_curve"]}
                   for s in sorted(summary, key=lambda s: s["lr"])],
        "trainer": summarize(sweep_dir),
        "toy_key": toy.group(1) if toy else run.get("toy_key"),
    }


def merge(path: Path, key: str, value: dict[str, Any], header: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(header)
    data.setdefault("runs", {})[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="default-warm,fast-warm,default-cold,fast-cold")
    parser.add_argument("--overrides", default="", help="comma-separated Hydra overrides for every run")
    parser.add_argument("--out", type=Path, default=RESULTS / "sweep_cpu.json")
    parser.add_argument("--trainer-out", type=Path, default=RESULTS / "trainer_cpu.json")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args(argv)
    overrides = [o for o in args.overrides.split(",") if o]
    header = {"machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name in [r for r in args.runs.split(",") if r]:
        preset, _, temp = name.partition("-")
        if preset not in PRESETS or temp not in ("warm", "cold"):
            raise SystemExit(f"unknown run {name!r}: use <default|fast>-<warm|cold>")
        print(f"[bench] {name} ...", flush=True)
        toy_key = None
        if temp == "warm":  # make sure the toy is cached (built here when it is not), and name it
            from orchestrator.config import compose_config
            from orchestrator.run.build import resolve_model

            toy_key = Path(resolve_model(compose_config([*PRESETS[preset], *overrides]))).name
        run = run_sweep(preset, temp == "cold", overrides, args.timeout) | {"toy_key": toy_key}
        try:
            result = describe(preset, temp == "cold", overrides, run)
        finally:
            shutil.rmtree(run["dir"], ignore_errors=True)
        trainer = result.pop("trainer")
        merge(args.out, name, result, header)
        merge(args.trainer_out, name, trainer, header)
        print(f"[bench] {name}: {result['wall_s']}s, {result['steps_trained']}/{result['steps_max']} steps trained, "
              f"orchestration {trainer['orchestration_share']:.1%} of trial wall, "
              f"{trainer['train_steps_per_s']} train steps/s", flush=True)


if __name__ == "__main__":
    main()
