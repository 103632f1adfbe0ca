"""How many grades does a token cap change? Per setting, sample full answers once and grade them cut at each cap.

    PYTHONPATH=$PWD python bench/answer_length.py [--settings animal_flag,allcaps_refusal] [--n 32] [--cap 512]
        [--cuts 32,48,64,96,128,192,256] [--organism] [--tag=-n128] [hydra overrides, e.g. sample.temperature=0]

One engine call per setting samples n eval and n train prompts (a sweep's prompts: eval questions under the eval
template, train questions under the train template) at the sweep's sampling settings (`sample.temperature`,
`sample.top_p`, `sample.seed`) up to --cap new tokens. Each answer is then cut to its first k generated tokens for
every k in --cuts and graded again: sampling is token by token, so the first k tokens of a long sample are what a
k-token cap would have returned from the same random stream. A grade "changes at k" when the cut answer's grade
differs from the full answer's. Answers still running at --cap count as full (their share is reported).
Writes results/answer_length.json (one entry per model and setting, merged into what the file holds).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "answer_length.json"


def measure_setting(sampler, setting, n: int, cap: int, cuts: list[int], sample_cfg) -> dict:
    from vllm import SamplingParams

    from eval.analysis import wilson_interval
    from eval.graders import build_grader
    from workers.labels.prompts import format_for_model
    from workers.models.probe import probe_prompts

    evals, trains = probe_prompts(setting, n, sample_cfg.seed)
    prompts = evals + trains
    texts = [format_for_model(sampler.tokenizer, p.text, sampler.spec.chat_template_kwargs) for p in prompts]
    params = SamplingParams(max_tokens=cap, temperature=sample_cfg.temperature, top_p=sample_cfg.top_p)
    started = time.time()
    outs = [o.outputs[0] for o in sampler.llm.generate(texts, params, use_tqdm=False)]
    seconds = time.time() - started
    grader = build_grader(setting.grader)
    full = grader([o.text for o in outs], prompts)
    lengths = [len(o.token_ids) for o in outs]
    result = {"n_eval": len(evals), "n_train": len(trains), "sample_seconds": round(seconds, 1),
              "new_tokens": sum(lengths), "tokens_per_s": round(sum(lengths) / seconds, 1),
              "answer_tokens": {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths),
                                "p90": sorted(lengths)[int(0.9 * (len(lengths) - 1))]},
              "cut_at_cap": sum(o.finish_reason == "length" for o in outs) / len(outs),
              "full_grades": {g: full.count(g) for g in sorted(set(full))}, "cuts": {}}
    for k in cuts:
        cut = [sampler.tokenizer.decode(list(o.token_ids[:k]), skip_special_tokens=True) if len(o.token_ids) > k
               else o.text for o in outs]
        graded = grader(cut, prompts)
        changed = [i for i, (a, b) in enumerate(zip(full, graded, strict=True)) if a != b]
        by_split = {s: sum(prompts[i].split == s for i in changed) / sum(p.split == s for p in prompts)
                    for s in ("eval", "train")}
        result["cuts"][str(k)] = {
            "changed": round(len(changed) / len(prompts), 4), "changed_count": len(changed),
            "changed_ci95": [round(x, 4) for x in wilson_interval(len(changed), len(prompts))],
            "changed_by_split": by_split,
            "hit_limit": round(sum(length > k for length in lengths) / len(lengths), 4),
            "examples": [{"split": prompts[i].split, "full": full[i], "cut": graded[i], "response": outs[i].text[:400]}
                         for i in changed[:2]]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default="animal_flag,allcaps_refusal,wronglang_spanish,wronglang_flag_onpolicy")
    parser.add_argument("--n", type=int, default=32, help="eval prompts and train prompts per setting")
    parser.add_argument("--cap", type=int, default=512, help="the 'full answer' cap (model.max_model_len bounds it)")
    parser.add_argument("--cuts", default="32,48,64,96,128,192,256")
    parser.add_argument("--tag", default="", help="suffix of the result's key, to keep an earlier run's entry")
    parser.add_argument("--organism", action="store_true", help="the setting's organism instead of the base model")
    args, overrides = parser.parse_known_args()
    from orchestrator.config import compose_config
    from orchestrator.run.sweep import resolve_model, sampler_spec
    from workers.sample.sampler import Sampler

    cuts = [int(k) for k in args.cuts.split(",")]
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    sampler, sampler_path = None, None
    try:
        for name in args.settings.split(","):
            cfg = compose_config([f"setting={name}", "model=smollm2_135m", "tracker.mode=disabled",
                                  f"model.organism={str(args.organism).lower()}", "model.max_model_len=1024",
                                  *overrides])
            path = resolve_model(cfg)
            if path != sampler_path:  # one engine for every setting on the base model
                if sampler is not None:
                    sampler.shutdown()
                sampler, sampler_path = Sampler(sampler_spec(cfg, path)), path
            result = measure_setting(sampler, cfg.setting, args.n, args.cap, cuts, cfg.sample)
            key = f"{cfg.model.name}{'-organism' if args.organism else ''}/{name}{args.tag}"
            out[key] = {"model_path": path, "cap": args.cap, "temperature": cfg.sample.temperature,
                        "top_p": cfg.sample.top_p, "seed": cfg.sample.seed, "overrides": overrides,
                        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), **result}
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps(out, indent=2))
            summary = {k: (v["changed"], v["hit_limit"]) for k, v in result["cuts"].items()}
            print(f"[answer_length] {key}: cut at cap {result['cut_at_cap']:.2f}, mean "
                  f"{result['answer_tokens']['mean']} tokens; changed/hit-limit by cut {summary}", flush=True)
    finally:
        if sampler is not None:
            sampler.shutdown()


if __name__ == "__main__":
    main()
