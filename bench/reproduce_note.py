"""The note's design on a real model, one command: SmolLM2-135M organisms, >= 4 LRs over >= 30x, 3 seeds (data order
only), each LR its own step budget (LR x steps), packed trials on CPU, early stopping at transfer; then one report
over the settings, copied with its figures and headline numbers to bench/results/reproduce_note/.

    python bench/reproduce_note.py --dry-run          # the plan: each setting's trials, steps per LR, the estimate
    python bench/reproduce_note.py                    # runs it (the organisms are built and cached first)

Thin over the product: each setting is `python -m orchestrator sweep ... sweep=note` with the overrides below (the
product's dry run prints the same plan), and the report is `python -m orchestrator report`. The CPU compromises
against the note (batch 4, not 32; 16 + 16 prompts; LRs 1e-3..3e-2, where a 135M LoRA moves within minutes) are
flags, printed with the plan, so the run says what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.metrics import checkpoint_steps  # noqa: E402
from orchestrator.budget import steps_by_lr  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# Measured costs the estimate uses (2 cores). pack_speed_cpu.json: SmolLM2, batch 4 per trial, ZeRO-3 on 2 ranks,
# seconds per packed step by K (run under load 11-16: an upper bound on a quiet machine).
PACK_STEP_S = {1: 9.70, 2: 17.45, 4: 23.03}
# answer_length.json: SmolLM2's vLLM engine on 2 cores sampled 156 tokens/s (load 4.3).
SAMPLE_TOKENS_PER_S = 156.1
# reproduce_note_timing.json: one measured run of this script. Its start-up (the vLLM engine, then the on-policy
# labels) and the work its trials did before it was stopped, to check and calibrate the model below against.
TIMING = json.loads((RESULTS / "reproduce_note_timing.json").read_text())
STARTUP_S = TIMING["startup_s"]


def work_s(packed_steps: int, trial_checkpoints: int, k: int, prompts: int, max_new_tokens: int) -> float:
    """Seconds of the trials' work by the measured costs: training and sampling share the same 2 cores, so their
    times add up (they do not overlap)."""
    step_s = PACK_STEP_S.get(k) or PACK_STEP_S[1] + (PACK_STEP_S[4] - PACK_STEP_S[1]) * (k - 1) / 3
    return packed_steps * step_s + trial_checkpoints * 2 * prompts * max_new_tokens / SAMPLE_TOKENS_PER_S


def calibration() -> float:
    """Measured over modelled seconds of the recorded run's trial phase (> 1: the model is optimistic)."""
    modelled = work_s(sum(TIMING["packed_steps_done"].values()), TIMING["trial_checkpoints_sampled"],
                      TIMING["pack_size"], TIMING["prompts"], TIMING["max_new_tokens"])
    return TIMING["trial_phase_s"] / modelled


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="wronglang_spanish,animal_flag")
    p.add_argument("--lrs", default="1e-3,3e-3,1e-2,3e-2",
                   help="comma-separated, >= 4 over >= 30x (3e-4..1e-2 would take ~74 min a setting on 2 cores)")
    p.add_argument("--budget", type=float, default=0.03, help="LR x steps each LR gets (sweep.lr_steps_budget)")
    p.add_argument("--seeds", default="0,1,2", help="data-order seeds (sweep.init_seed stays 0)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prompts", type=int, default=16, help="eval and train prompts per checkpoint")
    p.add_argument("--max-new-tokens", type=int, default=48,
                   help="the organisms answer in a few words (answer_length.json: mean 15.6, max 26 tokens)")
    p.add_argument("--per-octave", type=int, default=2, help="sweep.checkpoints_per_octave")
    p.add_argument("--teacher", default="onpolicy", choices=["onpolicy", "scripted"],
                   help="onpolicy: the organism's own answers on train prompts, kept when graded desired (the note's "
                        "behavior-compatible labels); scripted: the setting's template (a pipeline check only)")
    p.add_argument("--out", type=Path, default=RESULTS / "reproduce_note")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimate; run nothing")
    return p.parse_args(argv)


def sweep_block(args: argparse.Namespace) -> dict:
    lrs = [float(x) for x in args.lrs.split(",")]
    return {"lrs": lrs, "seeds": [int(s) for s in args.seeds.split(",")], "lr_steps_budget": args.budget,
            "max_steps": math.ceil(args.budget / min(lrs)), "checkpoints_per_octave": args.per_octave}


def overrides(args: argparse.Namespace, setting: str, folder: Path) -> list[str]:
    sw = sweep_block(args)
    return [f"setting={setting}", "model=smollm2_135m", "model.organism=true", "sweep=note",
            f"sweep.lrs=[{','.join(f'{lr:g}' for lr in sw['lrs'])}]", f"sweep.seeds=[{args.seeds}]",
            f"sweep.lr_steps_budget={args.budget}", f"sweep.max_steps={sw['max_steps']}",
            f"sweep.checkpoints_per_octave={args.per_octave}", f"sweep.pack={len(sw['seeds'])}",
            f"train.batch_size={args.batch_size}", f"train.micro_batch_size={args.batch_size}",
            f"sample.n_eval_prompts={args.prompts}", f"sample.n_train_prompts={args.prompts}",
            f"sample.max_new_tokens={args.max_new_tokens}", "tracker.mode=disabled", *teacher(args),
            f"hydra.run.dir={folder}"]


def teacher(args: argparse.Namespace) -> list[str]:
    """A real model's labels come from a real teacher: the organism itself, filtered by the setting's grader."""
    if args.teacher == "onpolicy":
        return ["setting.teacher.kind=onpolicy", "setting.teacher.filter=true"]
    return ["setting.teacher.allow_scripted=true"]


def design_problems(sw: dict) -> list[str]:
    """The issue's floor for the design: >= 4 LRs over >= 30x, >= 3 seeds, the lowest LR >= 30x the top's steps."""
    steps = steps_by_lr(sw)
    lo, hi = min(sw["lrs"]), max(sw["lrs"])
    problems = []
    if len(sw["lrs"]) < 4 or hi / lo < 30:
        problems.append(f"LRs {sw['lrs']}: need >= 4 LRs spanning >= 30x")
    if len(sw["seeds"]) < 3:
        problems.append(f"seeds {sw['seeds']}: need >= 3")
    if steps[lo] < 30 * steps[hi]:
        problems.append(f"lowest LR trains {steps[lo]} steps, under 30x the top LR's {steps[hi]}")
    return problems


def estimate_s(args: argparse.Namespace) -> dict:
    """Without early stopping (an upper bound on the trials): each pack (the seeds of one LR) trains its LR's
    steps; every checkpoint samples 2 x prompts answers of at most max_new_tokens; scaled by calibration()."""
    sw = sweep_block(args)
    k = len(sw["seeds"])
    steps = steps_by_lr(sw)
    ckpts = sum(len(checkpoint_steps(n, args.per_octave)) for n in steps.values()) * k
    modelled = work_s(sum(steps.values()), ckpts, k, args.prompts, args.max_new_tokens)
    scale = calibration()
    return {"checkpoints": ckpts, "modelled_s": modelled, "calibration": scale,
            "per_setting_s": STARTUP_S + modelled * scale}


def print_plan(args: argparse.Namespace, settings: list[str]) -> None:
    sw = sweep_block(args)
    est = estimate_s(args)
    print(f"the note's design on SmolLM2-135M organisms: {', '.join(settings)}")
    for lr, n in steps_by_lr(sw).items():
        print(f"  lr {lr:g}: {n} steps (LR x steps {lr * n:.3g}), checkpoints {checkpoint_steps(n, args.per_octave)}")
    print(f"  seeds {sw['seeds']} (data order only), packed {len(sw['seeds'])} to a pack (one LR each); batch "
          f"{args.batch_size}, {args.prompts} + {args.prompts} prompts, {args.max_new_tokens} new tokens")
    total = est["per_setting_s"] * len(settings)
    first = sum(TIMING["first_use_s"].values())
    print(f"estimate on 2 cores, without early stopping (an upper bound): per setting {STARTUP_S} s start-up + "
          f"{est['modelled_s'] / 60:.1f} min of training and sampling ({est['checkpoints']} trial checkpoints; they "
          f"share the cores, so the times add up) x {est['calibration']:.2f} (a measured run's trials took that "
          f"much longer than this model said: reproduce_note_timing.json) = {est['per_setting_s'] / 60:.0f} min")
    print(f"total for {len(settings)} settings: {total / 60:.0f} min (the issue's limit: 90 min), plus each "
          f"organism's build on first use (~{first / 60:.0f} min each, then cached)")
    for s in settings:
        print("  python -m orchestrator sweep " + " ".join(overrides(args, s, args.out / "sweeps" / s)))


def collect(args: argparse.Namespace, folders: list[Path], seconds: dict[str, float]) -> Path:
    """One report over the settings (the product's), and a summary of what ran, in args.out."""
    out = args.out / "report"
    subprocess.run([sys.executable, "-m", "orchestrator", "report", *map(str, folders), "--out", str(out)],
                   check=True, cwd=ROOT)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    summary = {"command": " ".join(sys.argv), "sweep": sweep_block(args), "seconds": seconds,
               "load_average_end": os.getloadavg(), "cpu_count": os.cpu_count(),
               "headline": report.get("headline") or report.get("headlines"), "report": str(out / "report.md")}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = [s for s in args.settings.split(",") if s]
    problems = design_problems(sweep_block(args))
    if problems:
        print("error: not the note's design: " + "; ".join(problems), file=sys.stderr)
        return 2
    print_plan(args, settings)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.dry_run:  # the product's own dry run of each sweep: every override is checked, nothing runs
        for s in settings:
            subprocess.run([sys.executable, "-m", "orchestrator", "sweep",
                            *overrides(args, s, args.out / "dry_run" / s), "dry_run=true"], check=True, cwd=ROOT,
                           env=env)
        shutil.rmtree(args.out / "dry_run", ignore_errors=True)
        return 0
    folders, seconds = [], {}
    for s in settings:
        folder = args.out / "sweeps" / s
        began = time.time()
        subprocess.run([sys.executable, "-m", "orchestrator", "sweep", *overrides(args, s, folder)], check=True,
                       cwd=ROOT, env=env)
        seconds[s] = round(time.time() - began, 1)
        folders.append(folder)
    print(f"report: {collect(args, folders, seconds) / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
