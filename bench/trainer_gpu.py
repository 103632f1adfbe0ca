"""Trainer throughput and model-FLOPs utilisation, lever by lever, through the sweep's own trainer code.

    python bench/trainer_gpu.py                          # on a GPU: both shapes, every lever set
    python bench/trainer_gpu.py --shapes dense --levers hf_recompute_mb8,chunks_mb32_compile
    python bench/trainer_gpu.py --shapes cpu151k --levers hf_mb8,chunks_mb8,chunks_mb32 \
        --out bench/results/trainer_loss_cpu.json              # CPU: the loss levers
    python bench/trainer_gpu.py --smoke --out /tmp/t.json   # CPU, tiny shape: checks the script runs

Random-init Qwen3 shapes (nothing downloaded): `dense` is Qwen3-1.7B's config; `moe` is Qwen3-30B-A3B's shape
cut to 8 layers (128 experts, top-8). Batch 32 x 512 tokens, the last 128 of each sequence are the answer
(the positions that carry loss), LoRA rank 8 (dense: every linear layer; moe: attention). Each lever set runs
in a fresh process: `workers.train.trainer.build_engine` and `train_step`, what a sweep's trial runs per step, with
the lever set's TrainSpec fields. The first steps are warm-up (compilation, allocator), then `--steps` are timed.

MFU = tokens/s x 4N / peak, N = active parameters that do matmuls per token: the decoder layers' (routed
experts: top-k of them) plus the LM head (issue 7's convention: 4N FLOPs per token for LoRA; peak 989 TFLOP/s
bf16 on an H100, `--peak-tflops`). Results go to bench/results/trainer_gpu.json (merged by shape and lever).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "trainer_gpu.json"
SEQ, ANSWER, BATCH = 512, 128, 32
DENSE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen3-1.7B
    "dense": {"kind": "qwen3", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
              "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
              "tie_word_embeddings": True, "targets": DENSE_TARGETS},
    # Qwen3-30B-A3B with 8 of its 48 layers
    "moe": {"kind": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
            "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 8,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "tie_word_embeddings": False,
            "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    # CPU: Qwen3's vocabulary on a small body, where the LM head and its logits dominate (the loss levers)
    "cpu151k": {"kind": "qwen3", "vocab_size": 151936, "hidden_size": 256, "intermediate_size": 768,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                "tie_word_embeddings": True, "targets": DENSE_TARGETS},
    # CPU smoke size
    "tiny": {"kind": "qwen3", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True,
             "targets": DENSE_TARGETS},
}

# lever set -> TrainSpec fields. hf_*: the model's own loss (logits at all 512 positions, fp32 upcast);
# chunks_*: workers/train/loss.py (answer positions only, LM head in chunks); recompute: gradient checkpointing
LEVERS: dict[str, dict[str, Any]] = {
    "hf_recompute_mb8": {"loss": "hf", "gradient_checkpointing": True, "micro_batch_size": 8},
    "hf_mb8": {"loss": "hf", "micro_batch_size": 8},
    "hf_mb16": {"loss": "hf", "micro_batch_size": 16},
    "chunks_mb8": {"micro_batch_size": 8},
    "chunks_mb16": {"micro_batch_size": 16},
    "chunks_mb32": {"micro_batch_size": 32},
    "chunks_mb16_compile": {"micro_batch_size": 16, "compile": True},
    "chunks_mb32_compile": {"micro_batch_size": 32, "compile": True},
    "chunks_mb32_zero3": {"micro_batch_size": 32, "zero_stage": 3},
}


def active_params(shape: dict[str, Any]) -> int:
    """Matmul parameters one token passes through: attention, MLP (routed: top-k experts + router), LM head."""
    h, hd = shape["hidden_size"], shape["head_dim"]
    attn = h * hd * (2 * shape["num_attention_heads"] + 2 * shape["num_key_value_heads"])
    if shape["kind"] == "qwen3_moe":
        mlp = shape["num_experts_per_tok"] * 3 * h * shape["moe_intermediate_size"] + h * shape["num_experts"]
    else:
        mlp = 3 * h * shape["intermediate_size"]
    return shape["num_hidden_layers"] * (attn + mlp) + shape["vocab_size"] * h


def build_random_model(shape: dict[str, Any], path: Path, dtype: str) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    fields = {k: v for k, v in shape.items() if k not in ("kind", "targets")}
    config_cls, model_cls = ((Qwen3MoeConfig, Qwen3MoeForCausalLM) if shape["kind"] == "qwen3_moe"
                             else (Qwen3Config, Qwen3ForCausalLM))
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = model_cls(config_cls(**fields, max_position_embeddings=4096)).to(getattr(torch, dtype))
    model.save_pretrained(path)


def synthetic_batch(vocab: int, seq: int, answer: int, rows: int, seed: int) -> list[dict[str, list[int]]]:
    """Encoded examples as workers.train.batching makes them: the last `answer` labels carry loss."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, seq), generator=g).tolist()
    return [{"input_ids": row, "labels": [-100] * (seq - answer) + row[seq - answer:]} for row in ids]


def run_lever(model_path: str, shape_name: str, lever: str, steps: int, warmup: int, dtype: str, seq: int,
              answer: int, peak_tflops: float, out: str) -> None:
    """One lever set in this (fresh) process; writes its row to `out`."""
    import torch

    from workers.train.config import unplanned
    from workers.train.trainer import TrainSpec, build_engine, init_distributed, rank_and_world, train_step

    shape = SHAPES[shape_name]
    spec = TrainSpec(model_path=model_path, dtype=dtype, lora_target_modules=shape["targets"], lr=1e-4, seed=0,
                     max_steps=steps, checkpoint_steps=[], max_seq_len=seq,
                     train=unplanned(batch_size=BATCH, zero_stage=0, torch_threads=os.cpu_count() or 1))
    lever_knobs = dict(LEVERS[lever])
    checkpointing = lever_knobs.pop("gradient_checkpointing", spec.gradient_checkpointing)
    spec = replace(spec.with_train(**lever_knobs), gradient_checkpointing=checkpointing)
    row: dict[str, Any] = {"shape": shape_name, "lever": lever, "spec": LEVERS[lever]}
    try:
        device, _ = init_distributed("auto")
        if device == "cpu":
            torch.set_num_threads(spec.train.torch_threads)
        cuda = device == "cuda"
        t0 = time.time()
        engine = build_engine(spec, rank_and_world()[1], log=lambda _: None)
        row["setup_s"] = round(time.time() - t0, 1)
        engine.train()
        times = []
        for step in range(warmup + steps):
            batch = synthetic_batch(shape["vocab_size"], seq, answer, BATCH, seed=step)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.time()
            loss = train_step(engine, spec, batch, pad_id=0)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.time() - t0)
        timed = times[warmup:]
        tokens_per_s = BATCH * seq * len(timed) / sum(timed)
        n = active_params(shape)
        row |= {"warmup_s": round(sum(times[:warmup]), 2), "step_s": round(sum(timed) / len(timed), 4),
                "tokens_per_s": round(tokens_per_s), "active_params": n,
                "mfu": round(tokens_per_s * 4 * n / (peak_tflops * 1e12), 4), "last_loss": round(loss, 4),
                "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    except torch.OutOfMemoryError as err:
        row["error"] = f"out of memory: {str(err).splitlines()[0]}"
    except Exception as err:  # a lever that fails here (a compile error, say) is a result, not the end of the run
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    Path(out).write_text(json.dumps(row))


def measure(shape_name: str, levers: list[str], steps: int, warmup: int, dtype: str, seq: int, answer: int,
            peak_tflops: float, timeout: int) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"lrsweep-bench-{shape_name}-") as tmp:
        model_path = Path(tmp) / "model"
        t0 = time.time()
        build_random_model(SHAPES[shape_name], model_path, dtype)
        print(f"[bench] {shape_name}: random model saved in {time.time() - t0:.0f}s", flush=True)
        for lever in levers:
            out = Path(tmp) / f"{lever}.json"
            proc = ctx.Process(target=run_lever, args=(str(model_path), shape_name, lever, steps, warmup, dtype,
                                                       seq, answer, peak_tflops, str(out)))
            proc.start()
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()
            row = (json.loads(out.read_text()) if out.exists() else
                   {"shape": shape_name, "lever": lever, "error": f"process ended with {proc.exitcode}"})
            print(f"[bench] {json.dumps(row)}", flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="dense,moe")
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per lever set")
    parser.add_argument("--smoke", action="store_true", help="tiny shape in fp32, 64 tokens: for CPU and CI")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch

    dtype = "bfloat16" if torch.cuda.is_available() else "float32"  # bf16 matmuls on CPU are slow
    shapes, seq, answer = args.shapes.split(","), SEQ, ANSWER
    if args.smoke:
        shapes, dtype, seq, answer = ["tiny"], "float32", 64, 16
    unknown = [name for name in args.levers.split(",") if name not in LEVERS]
    if unknown:
        parser.error(f"unknown lever sets {unknown}: choose from {list(LEVERS)}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'})"
    rows = [row for shape in shapes
            for row in measure(shape, args.levers.split(","), args.steps, args.warmup, dtype, seq, answer,
                               args.peak_tflops, args.timeout)]
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    keep = [r for r in previous["rows"] if (r["shape"], r["lever"]) not in {(n["shape"], n["lever"]) for n in rows}]
    result = {"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "batch": BATCH, "seq_len": seq, "answer_tokens": answer, "dtype": dtype,
              "peak_tflops": args.peak_tflops, "rows": keep + rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
