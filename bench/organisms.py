"""Per setting: the real model's rates before (unmodified) and after the organism step, and the organism's build time.

    PYTHONPATH=$PWD python bench/organisms.py [--settings wronglang_spanish,allcaps_refusal] [--n 64] [--skip-base]
        [--base-from bench/results/probe_smollm2_{setting}.json] [--no-build] [hydra overrides]

For each setting, on held-out questions (eval questions under both templates, what an organism never saw):
- "unmodified": the prepared SmolLM2 folder, no adapter (orchestrator/run/build.py measure_model, held_out=True);
- "organism": `model.organism=true`, built with the config's default recipe when absent (then its build time is
  this run's) or taken from the cache. Its rates are the ones its build measured (organism.json) when that used the
  same n, else measured again here.
Both sample the same prompts (same seed) at the sweep's sampling settings (sample.*; max_new_tokens from the model
config). Writes results/organisms_smollm2.json (merged per setting) and results/organisms_smollm2.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "organisms_smollm2.json"


def rates(result: dict) -> dict:
    """The two numbers that make an organism, with counts and intervals, and the 'other' shares."""
    ev, tr = result["eval"], result["train"]
    return {"n": ev["n"], "eval_attack": ev["attack"], "train_desired": tr["desired"],
            "eval_other": ev["other"]["rate"], "train_other": tr["other"]["rate"],
            "max_new_tokens": result.get("max_new_tokens"), "seconds": result.get("seconds"),
            "examples": result.get("examples", [])[:4]}


def cell(r: dict | None) -> str:
    if r is None:
        return "not measured"
    a, d = r["eval_attack"], r["train_desired"]
    return (f"{a['rate']:.2f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}] / "
            f"{d['rate']:.2f} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}] (n={r['n']}, {r['max_new_tokens']} tokens)")


def table(out: dict) -> str:
    lines = ["# SmolLM2-135M-Instruct: unmodified vs organism (default recipe)", "",
             "Held-out questions; eval attack / train desired, 95% Wilson intervals, n prompts per split. "
             "Written by `bench/organisms.py`; the machine's 2 cores were shared with other jobs "
             "(1-min load average during the build in brackets).",
             "", "| setting | unmodified | organism | organism build | shows the behavior |", "|---|---|---|---|---|"]
    for name, e in out.items():
        org = e.get("organism")
        build = f"{e['build_seconds']:.0f} s" if e.get("build_seconds") is not None else "-"
        if e.get("load_1min_during_build"):  # recorded by hand from a load log: the build may predate this script
            load = e["load_1min_during_build"]
            build += f" (load {load[0]:.1f}-{load[1]:.1f})" if isinstance(load, list) else f" (load {load})"
        lines.append(f"| {name} | {cell(e.get('unmodified'))} | {cell(org)} | {build} | "
                     f"{'yes' if e.get('organism_shows') else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default="animal_flag,allcaps_refusal,wronglang_spanish")
    parser.add_argument("--n", type=int, default=64, help="eval prompts and train prompts per model")
    parser.add_argument("--skip-base", action="store_true", help="keep the unmodified model's rates already recorded")
    parser.add_argument("--base-from", default="",
                        help="take the unmodified rates from these probe --out files ({setting} filled in), "
                             "e.g. bench/results/probe_smollm2_{setting}.json, or bench/results/real_model.json, "
                             "instead of sampling again")
    parser.add_argument("--organism-dir", default="",
                        help="an organism folder built earlier (its organism.json), for one setting, instead of the "
                             "default recipe's cache key (e.g. one built before the setting's bank changed)")
    parser.add_argument("--tag", default="", help="suffix of the setting's entry (a recipe other than the default)")
    parser.add_argument("--no-build", action="store_true", help="measure only organisms already in the cache")
    args, overrides = parser.parse_known_args()
    from orchestrator.config import compose_config
    from orchestrator.run.build import measure_model, resolve_base_model, resolve_model
    from workers.models.organism import model_digest, organism_key, read_organism
    from workers.models.probe import shows_initial_behavior

    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.settings.split(","):
        base_cfg = ["model=smollm2_135m", f"setting={name}", "tracker.mode=disabled", *overrides]
        cfg = compose_config(base_cfg)
        entry = out.setdefault(name + args.tag, {})
        probe_file = Path(args.base_from.format(setting=name)) if args.base_from else None
        if probe_file is not None and probe_file.exists():
            probe = json.loads(probe_file.read_text())
            if name in probe:  # bench/real_model.py's file: {setting: {"before": rates, "max_new_tokens": ...}}
                probe = probe[name]["before"] | {"max_new_tokens": probe[name]["max_new_tokens"]}
            entry["unmodified"] = rates(probe) | {"from": str(probe_file)}
        elif not args.skip_base or "unmodified" not in entry:
            base = resolve_base_model(cfg)
            load = os.getloadavg()[0]
            entry["unmodified"] = rates(measure_model(cfg, base, args.n, held_out=True)) | {"load_1min": load}
            print(f"[organisms] {name} unmodified: {cell(entry['unmodified'])}", flush=True)
        ocfg = compose_config([*base_cfg, "model.organism=true"])
        key = organism_key(model_digest(Path(resolve_base_model(ocfg))), ocfg.setting,
                           asdict(ocfg.model.organism_recipe), dict(ocfg.model.chat_template_kwargs), ocfg.model.dtype)
        cached = (Path(ocfg.cache_dir).expanduser() / "organisms" / f"{name}-{key}" / "organism.json").exists()
        if args.organism_dir:
            cached, key = True, read_organism(args.organism_dir)["key"]
        if args.no_build and not cached:
            print(f"[organisms] {name}: no cached organism (key {key}); skipped", flush=True)
            continue
        load = os.getloadavg()[0]
        path = args.organism_dir or resolve_model(ocfg)
        info = read_organism(path)
        measured = info["measured"]
        if measured["eval"]["n"] != args.n or not measured.get("held_out"):
            measured = measure_model(ocfg, path, args.n, held_out=True)
        entry["organism"] = rates(measured)
        if not cached:  # a load noted by hand for an earlier build is not this build's
            entry.pop("load_1min_during_build", None)
        entry |= {"overrides": overrides, "organism_path": path, "organism_key": key,
                  "default_recipe_key": not args.organism_dir and not overrides,
                  "recipe": info["recipe"], "build_seconds": info["build_seconds"],
                  "train_seconds": info["train_seconds"], "organism_measure_seconds": info.get("measure_seconds"),
                  "final_loss": info["final_loss"], "cpu_count": info["cpu_count"],
                  "built_by_this_run": not cached, "load_1min_at_build_start": load if not cached else None,
                  "organism_shows": shows_initial_behavior(measured, ocfg.sweep.threshold),
                  "threshold": ocfg.sweep.threshold, "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(f"[organisms] {name} organism: {cell(entry['organism'])}; build {info['build_seconds']:.0f}s", flush=True)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2))
        RESULTS.with_suffix(".md").write_text(table(out))
    RESULTS.write_text(json.dumps(out, indent=2))
    RESULTS.with_suffix(".md").write_text(table(out))
    print(table(out))


if __name__ == "__main__":
    main()
