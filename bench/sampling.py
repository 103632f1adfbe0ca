"""Sampling every checkpoint of a sweep: one vLLM engine, all adapters in one batch, vs HF generate per adapter.

    python bench/sampling.py                          # 8 adapters x 256 prompts x 64 tokens; scaling 1, 4, 16
    python bench/sampling.py --adapters 2 --prompts 16 --tokens 8 --scaling 1,2 --out /tmp/s.json   # smoke size

Both sides sample the same prompts (a checkpoint's eval + train prompts of the setting, through the chat
template) with the same adapters (real PEFT LoRA adapters of the trainer's shape, random nonzero weights),
temperature 1 and exactly --tokens new tokens per prompt (EOS ignored, so both generate the same count).
Model loading and engine start are one-off costs of a sweep: reported, not counted in tokens/s. Adapter
loading is counted: every checkpoint is a new adapter. On CPU builds of vLLM it runs one engine per LoRA kernel
(--kernels: lrsweep's grouped kernels, then vLLM's own ops), so the two are compared in one run.
Writes bench/results/sampling_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.config import compose_config
from orchestrator.run.build import resolve_model, sampler_spec
from orchestrator.run.trial import eval_prompts
from workers.sample.vllm_cpu_lora import KERNELS

OUT = Path(__file__).resolve().parent / "results" / "sampling_cpu.json"


def hf_generate(model_path: str, adapters: list[Path], texts: list[str], tokens: int, temperature: float,
                chat_template_kwargs: dict) -> dict[str, Any]:
    """HF transformers + PEFT: load each adapter in turn, generate all prompts in one left-padded batch."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.labels.prompts import format_for_model

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    enc = tok([format_for_model(tok, t, chat_template_kwargs) for t in texts], return_tensors="pt", padding=True,
              add_special_tokens=False)
    kwargs = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": True, "temperature": temperature,
              "top_p": 1.0, "pad_token_id": tok.pad_token_id}
    with torch.inference_mode():  # warm-up on the base model: first-call costs are not sampling
        base.generate(**{k: v[:4] for k, v in enc.items()}, **(kwargs | {"max_new_tokens": 2, "min_new_tokens": 2}))
    load_s = time.time() - started
    model, per_adapter, generated = None, [], 0
    t0 = time.time()
    for i, adapter in enumerate(adapters):
        s = time.time()
        if model is None:
            model = PeftModel.from_pretrained(base, str(adapter), adapter_name=f"a{i}")
        else:
            model.load_adapter(str(adapter), adapter_name=f"a{i}")
            model.set_adapter(f"a{i}")
            model.delete_adapter(f"a{i - 1}")
        model.eval()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        generated += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
        per_adapter.append(round(time.time() - s, 3))
    elapsed = time.time() - t0
    return {"seconds": round(elapsed, 3), "generated_tokens": generated,
            "tokens_per_s": round(generated / elapsed, 1), "seconds_per_adapter": per_adapter,
            "model_load_s": round(load_s, 2), "torch_threads": torch.get_num_threads()}


def vllm_generate(sampler: Any, adapters: list[Path], texts: list[str], tokens: int, temperature: float,
                  one_batch: bool = True) -> dict[str, Any]:
    """The sweep's sampler: all adapters' requests in one engine call (or, for comparison, one call each)."""
    from workers.sample.sampler import Request

    requests = [Request(str(a), texts, tokens, temperature, 1.0, ignore_eos=True) for a in adapters]
    before, calls_before = sampler.generated_tokens, len(sampler._batcher.batch_sizes)
    t0 = time.time()
    if one_batch:
        outputs = sampler.generate_many(requests)
    else:
        outputs = [sampler.generate_many([r])[0] for r in requests]
    elapsed = time.time() - t0
    generated = sampler.generated_tokens - before
    assert [len(o) for o in outputs] == [len(texts)] * len(adapters)
    return {"adapters": len(adapters), "seconds": round(elapsed, 3), "generated_tokens": generated,
            "tokens_per_s": round(generated / elapsed, 1), "seconds_per_adapter": round(elapsed / len(adapters), 3),
            "engine_calls": len(sampler._batcher.batch_sizes) - calls_before}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=256, help="per adapter: half eval, half train prompts")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--scaling", default="1,4,16", help="adapter counts for the growth table")
    parser.add_argument("--max-num-seqs", type=int, default=2048, help="vLLM sequences per step (0: its default)")
    parser.add_argument("--kernels", default="grouped,vllm",
                        help="CPU LoRA kernels (sample.engine.cpu_lora_kernel), one engine each in this run; the first "
                             "also runs the growth table")
    parser.add_argument("--out", type=Path, default=OUT)
    args, overrides = parser.parse_known_args(argv)
    scaling = [int(x) for x in args.scaling.split(",") if x]
    half = args.prompts // 2
    cfg = compose_config([f"sample.n_eval_prompts={args.prompts - half}", f"sample.n_train_prompts={half}",
                          *overrides])
    model_path = resolve_model(cfg)
    evals, trains = eval_prompts(cfg.setting, cfg.sample)
    texts = [p.text for p in evals + trains]
    temp = cfg.sample.temperature
    work = Path(tempfile.mkdtemp(prefix="lrsweep-bench-sampling-"))
    from bench.adapters import random_adapters

    def adapters(n: int, prefix: str) -> list[Path]:
        m, t = cfg.model, cfg.train
        return random_adapters(model_path, list(m.lora_target_modules), t.lora_rank, t.lora_alpha, n, work,
                               seed=len(prefix), prefix=prefix)

    main_set, seq_set = adapters(args.adapters, "main"), adapters(args.adapters, "percall")
    scale_sets = {n: adapters(n, f"scale{n}") for n in scaling}
    print(f"[bench] {args.adapters} adapters x {len(texts)} prompts x {args.tokens} tokens; adapters in {work}",
          flush=True)

    hf = hf_generate(model_path, main_set, texts, args.tokens, temp, dict(cfg.model.chat_template_kwargs))
    print(f"[bench] HF generate: {hf['tokens_per_s']} tok/s", flush=True)

    from workers.sample.sampler import Sampler

    most = max([args.adapters, *scaling])
    kernels = [k for k in args.kernels.split(",") if k]
    if not kernels or set(kernels) - set(KERNELS):
        parser.error(f"--kernels {args.kernels!r}: a comma-separated list of {list(KERNELS)}")
    spec = sampler_spec(cfg, model_path).with_engine(max_loras=most, max_cpu_loras=max(2 * most, 32),
                                                     max_num_seqs=args.max_num_seqs or None)
    runs: dict[str, dict[str, Any]] = {}
    for i, kernel in enumerate(kernels):  # a fresh engine per kernel: its processes read the choice at start
        started = time.time()
        sampler = Sampler(spec.with_engine(cpu_lora_kernel=kernel))
        sampler.generate(None, texts[:4], 2, temp, 1.0)  # warm-up: first-call costs are not sampling
        run: dict[str, Any] = {"engine_start_s": round(time.time() - started, 2)}
        try:
            run["one_batch"] = vllm_generate(sampler, main_set, texts, args.tokens, temp, one_batch=True)
            print(f"[bench] vLLM ({kernel} LoRA kernels) one batch: {run['one_batch']['tokens_per_s']} tok/s",
                  flush=True)
            run["one_call_per_adapter"] = vllm_generate(sampler, seq_set, texts, args.tokens, temp, one_batch=False)
            print(f"[bench] vLLM ({kernel}) one call per adapter: {run['one_call_per_adapter']['tokens_per_s']} tok/s",
                  flush=True)
            run["growth"] = [vllm_generate(sampler, scale_sets[n], texts, args.tokens, temp)
                             for n in (scaling if i == 0 else [])]
        finally:
            sampler.shutdown()
        runs[kernel] = run
    first = runs[kernels[0]]
    batched, per_call = first["one_batch"], first["one_call_per_adapter"]
    info = json.loads((Path(model_path) / "build_info.json").read_text()) if cfg.model.path is None else {}
    result = {
        "what": "every checkpoint of a sweep sampled on the same prompts: vLLM multi-LoRA in one batch vs HF "
                "transformers generate with each PEFT adapter loaded in turn (batched per adapter)",
        "command": "python bench/sampling.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
        "vllm_cpu_env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_CPU")},
        "model": cfg.model.name, "toy_key": info.get("key"), "adapters": args.adapters, "prompts": len(texts),
        "new_tokens": args.tokens, "temperature": temp, "lora_rank": cfg.train.lora_rank,
        "vllm_max_num_seqs": spec.engine.max_num_seqs, "vllm_max_loras": spec.engine.max_loras,
        "vllm_cpu_lora_kernel": kernels[0],
        "vllm_engine_start_s": first["engine_start_s"],
        "hf_generate_per_adapter": hf,
        "vllm_multi_lora_one_batch": batched,
        "vllm_one_call_per_adapter": per_call,
        "speedup_vs_hf": round(batched["tokens_per_s"] / hf["tokens_per_s"], 2),
        "speedup_vs_one_call_per_adapter": round(batched["tokens_per_s"] / per_call["tokens_per_s"], 2),
        "growth_with_adapters_in_one_engine": first["growth"],
        "cpu_lora_kernels": {k: {"engine_start_s": r["engine_start_s"], "one_batch": r["one_batch"],
                                 "one_call_per_adapter": r["one_call_per_adapter"],
                                 "speedup_vs_hf": round(r["one_batch"]["tokens_per_s"] / hf["tokens_per_s"], 2)}
                             for k, r in runs.items()},
    }
    if {"grouped", "vllm"} <= set(runs):  # the kernels side by side, same engine settings, same run
        result["grouped_vs_vllm_ops_one_batch"] = round(
            runs["grouped"]["one_batch"]["tokens_per_s"] / runs["vllm"]["one_batch"]["tokens_per_s"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("growth_with_adapters_in_one_engine",)}, indent=2))
    for g in first["growth"]:
        print(f"[bench] {g['adapters']:>2} adapters in one engine call: {g['seconds']:.2f}s "
              f"({g['seconds_per_adapter']:.2f}s per adapter, {g['tokens_per_s']} tok/s)")
    return result


if __name__ == "__main__":
    main()
