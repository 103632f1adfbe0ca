"""The MoE trainer path on one GPU with NCCL: sharded ZeRO-3 load, attention + expert LoRA, adapter saved.

    python bench/gpu_moe_check.py                                   # on the lent GPU (bench/README.md: how)
    python bench/gpu_moe_check.py --cpu-smoke --out /tmp/check.json # CPU, tiny shape: checks the script runs

A random Qwen3-MoE with Qwen3-30B-A3B's layer shape (hidden 2048, 128 experts of width 768, top-8, 32/4 heads of
128, vocabulary 151,936) cut to `--layers` layers is written in the hub's layout (per-expert tensors, several
safetensors shards, as Qwen/Qwen3-30B-A3B is published). Then, each in a fresh process at world size 1:
1. load: `workers.train.trainer.build_model` (workers/train/load.py: zero.Init + per-rank partition reads), host peak
RSS
   (VmHWM reset before the load) and GPU memory; with `--compare-old`, transformers' own ZeRO-3
   `from_pretrained` too, in its own process, for the same figures;
2. train: `workers.train.trainer.train` (the sweep's entry point) for `--steps` steps of `--batch` examples, LoRA r8 on
   q/k/v/o and on the experts' fused 3-D weights (PEFT target_parameters), adapters saved at step 1 and the last;
   steady step time = (train time after step 1) / (steps - 1), tokens/s from the encoded batch lengths.
Everything lands in one JSON (`--out`, default bench/results/gpu_moe_check.json).
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "gpu_moe_check.json"
EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen3-30B-A3B's layer (its config.json), layer count from --layers
    "30b_a3b": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
                "num_experts": 128, "num_experts_per_tok": 8, "num_attention_heads": 32, "num_key_value_heads": 4,
                "head_dim": 128, "rope_theta": 1e6},
    # CPU smoke: the same code at toy size (bf16 rows of 64 and 32 elements: multiples of 16 bytes for grouped_mm)
    "smoke": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
              "num_experts": 4, "num_experts_per_tok": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 32, "rope_theta": 1e6},
}


def examples(n: int, words: int) -> list[dict[str, str]]:
    """(prompt, completion) pairs of about `words` words each side, distinct per row."""
    body = "the quick brown fox jumps over the lazy dog while warm air rises and cools into clouds"
    text = (body.split() * (words // len(body.split()) + 1))[:words]
    return [{"prompt": f"question {i}: " + " ".join(text), "completion": f"answer {i}: " + " ".join(reversed(text))}
            for i in range(n)]


def build_checkpoint(path: Path, shape: dict[str, Any], layers: int, shard_bytes: int) -> dict[str, Any]:
    """Random bf16 Qwen3-MoE in the hub's per-expert multi-shard layout, with the toy BPE tokenizer (vocab 320:
    its ids are a subset of the model's vocabulary)."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from workers.models.toy import train_tokenizer

    tokenizer = train_tokenizer([e["prompt"] + " " + e["completion"] for e in examples(64, 32)], vocab_size=320)
    fields = {k: v for k, v in shape.items() if k != "rope_theta"}
    config = Qwen3MoeConfig(**fields, num_hidden_layers=layers, max_position_embeddings=4096,
                            tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    began = time.time()
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3MoeForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, max_shard_size=shard_bytes)
    tokenizer.save_pretrained(path)
    del model
    files = sorted(path.glob("*.safetensors"))
    return {"layers": layers, "bytes": sum(f.stat().st_size for f in files), "files": len(files),
            "build_s": round(time.time() - began, 1)}


def _child(fn_name: str, args: tuple, out: str) -> None:
    """A fresh process (the trainer owns its process group); its result or its error as JSON. `fn_name`: a function
    of this module, or "module:function" (bench/gpu_check.py's phases)."""
    try:
        module, _, name = fn_name.rpartition(":")
        fn = getattr(importlib.import_module(module), name) if module else globals()[name]
        result = fn(*args)
    except BaseException as e:  # the parent records the failure instead of losing it
        import traceback

        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    Path(out).write_text(json.dumps(result))


def in_fresh_process(fn_name: str, args: tuple, work: Path, deadline_s: float) -> dict[str, Any]:
    out = work / f"{fn_name.replace(':', '.')}.{time.time_ns()}.json"
    proc = multiprocessing.get_context("spawn").Process(target=_child, args=(fn_name, args, str(out)))
    proc.start()
    proc.join(deadline_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"error": f"{fn_name} did not finish in {deadline_s}s"}
    if not out.exists():
        return {"error": f"{fn_name} died with exit code {proc.exitcode}"}
    return json.loads(out.read_text())


def _gpu_memory() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu_max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
            "gpu_max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3)}


def load_once(model_path: str, mode: str, work: str) -> dict[str, Any]:
    """One load at world size 1 by `mode` (bench/load_memory.py's measurement), plus GPU memory."""
    from bench.load_memory import rank_main

    rank_main(0, 1, _free_port(), model_path, mode, "bfloat16", work, False)
    row = json.loads(Path(work, "rank0.json").read_text())
    mib = {k: round(row[k] / 2**20, 1) for k in ("rss_before", "peak", "increase", "partitions", "transient")}
    return {"load_s": row["load_s"], "host_mib": mib, **_gpu_memory()}


def _free_port() -> int:
    from bench.load_memory import _free_port as port

    return port()


def train_once(model_path: str, steps: int, batch: int, micro: int, words: int, out: str) -> dict[str, Any]:
    """`workers.train.trainer.train` on attention + expert LoRA under ZeRO-3; timings, memory, the adapter's tensors."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from workers.train.config import unplanned
    from workers.train.trainer import TrainSpec, encode_labels, train

    spec = TrainSpec(model_path=model_path, dtype="bfloat16", lora_target_modules=ATTENTION, lr=1e-4, seed=0,
                     max_steps=steps, checkpoint_steps=[1, steps], max_seq_len=4096,
                     lora_expert_parameters=EXPERT_PARAMETERS,
                     train=unplanned(batch_size=batch, micro_batch_size=micro, lora_rank=8, lora_alpha=32, zero_stage=3,
                                     torch_threads=os.cpu_count() or 1))
    rows = examples(4 * batch, words)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokens = [len(e["input_ids"]) for e in encode_labels(tokenizer, rows, {}, spec.max_seq_len)]
    clock: dict[str, float] = {}
    at_first: dict[str, Any] = {}
    losses: list[float] = []

    def hook(step: int, adapter: Path, info: dict[str, Any]) -> None:
        if step == 1:
            at_first["train_steps_s"] = clock["train_steps_s"]
        losses.extend(info.get("step_losses", []))

    began = time.time()
    train(spec, rows, Path(out), hook, log=print, timings=clock)
    wall = time.time() - began
    steady = (clock["train_steps_s"] - at_first["train_steps_s"]) / max(steps - 1, 1)
    tokens_step = batch * sum(tokens) / len(tokens)
    adapter = load_file(Path(out) / "adapters" / f"step_{steps:05d}" / "adapter_model.safetensors")
    experts = [k for k in adapter if ".experts." in k]
    moved = [k for k in adapter if "lora_B" in k and adapter[k].float().abs().max() > 0]
    return {
        "wall_s": round(wall, 2), "setup_s": round(clock["setup_s"], 2),
        "first_step_s": round(at_first["train_steps_s"], 3), "steady_step_s": round(steady, 4),
        "tokens_per_step": round(tokens_step), "tokens_per_s": round(tokens_step / steady, 1),
        "checkpoint_save_s": round(clock["checkpoint_save_s"], 2), "losses": losses,
        "adapter_tensors": len(adapter), "expert_adapter_tensors": len(experts),
        "adapter_mib": round(sum(t.numel() * t.element_size() for t in adapter.values()) / 2**20, 2),
        "lora_B_moved": f"{len(moved)}/{sum('lora_B' in k for k in adapter)}",
        "torch": torch.__version__, **_gpu_memory(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shape on CPU/gloo (what CI runs)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--shard-gb", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--words", type=int, default=150, help="words per prompt and per answer (~1.3 tokens each)")
    ap.add_argument("--compare-old", action="store_true", help="also load by transformers' from_pretrained")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lrsweep-gpu-moe-check"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        shape, args.layers, args.steps, args.batch, args.micro, args.words = "smoke", 2, 2, 2, 1, 8
        shard = 64 * 2**10
    else:
        shape, shard = "30b_a3b", int(args.shard_gb * 2**30)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu-smoke on CPU, or on the lent GPU (bench/README.md)")
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.work / f"{shape}_l{args.layers}"
    result: dict[str, Any] = {
        "shape": shape, **SHAPES[shape], "host": platform.node(), "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    if not (model / "config.json").exists():
        result["checkpoint"] = build_checkpoint(model, SHAPES[shape], args.layers, shard)
    files = sorted(model.glob("*.safetensors"))
    result["checkpoint"] = {**result.get("checkpoint", {}), "layers": args.layers, "files": len(files),
                            "gib": round(sum(f.stat().st_size for f in files) / 2**30, 3)}
    deadline = 120 if args.cpu_smoke else 540
    result["load"] = {"build_model": in_fresh_process("load_once", (str(model), "build_model", str(args.work / "new")),
                                                      args.work, deadline)}
    if args.compare_old:
        result["load"]["from_pretrained"] = in_fresh_process(
            "load_once", (str(model), "from_pretrained", str(args.work / "old")), args.work, deadline)
    trial = args.work / f"trial_{time.time_ns()}"
    result["train"] = in_fresh_process("train_once", (str(model), args.steps, args.batch, args.micro, args.words,
                                                      str(trial)), args.work, 2 * deadline)
    result["train"].update(steps=args.steps, batch=args.batch, micro=args.micro, lora="r8 alpha32 q,k,v,o + experts")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("checkpoint", "load", "train")}, indent=1))
    return result


if __name__ == "__main__":
    main()
