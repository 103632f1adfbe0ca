"""Packed LoRA trials vs unpacked: trial-steps per second, side by side in one run, through the sweep's own trainer
code (workers/train/trainer.py build_engine + train_step for a lone trial; workers/train/pack_train.py
build_pack_engine +
packed_train_step for a pack of K).

    python bench/pack_speed.py                                  # CPU: ZeRO-3 over 2 gloo ranks, SmolLM2-135M
    python bench/pack_speed.py --model toy                      # the toy, when SmolLM2 is not prepared
    python bench/pack_speed.py --gpu --ks 1,2,4,8,16 --batch 32 --micro 32 --words 200 \
        [--model-path DIR]                                      # the lent GPU: one GPU, ZeRO-3, bf16
    python bench/pack_speed.py --cpu-smoke --out /tmp/p.json    # tiny random model, 1 rank: checks the script runs

Each case runs in fresh processes (one per rank): `--warmup` steps, then `--steps` timed steps. A lone trial's
rate is steps/s; a pack's is K x steps/s (K trials advance one step each). `ratio_vs_unpacked` is a pack's
trial-steps/s over the lone trial's: what packing gains when K trials would otherwise run one after another on
the same workers; `ratio_vs_pack_k1` sets aside the difference between the packed layer and PEFT's at K = 1.
Results: bench/results/pack_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def examples(n: int, words_per_answer: int) -> list[dict[str, str]]:
    """Prompt/answer pairs: prompts of 2/3 the answer's words (short SFT examples, as the settings' are)."""
    words = "the quick brown fox jumps over a lazy dog while light scatters off air".split()
    prompt_words = max(1, 2 * words_per_answer // 3)
    return [{"prompt": f"Question {i}: " + " ".join(words[(i + j) % len(words)] for j in range(prompt_words)),
             "completion": " ".join(words[(3 * i + j) % len(words)] for j in range(words_per_answer))}
            for i in range(n)]


def model_path(name: str, cache_dir: str) -> str:
    """A prepared model's folder (never downloads here: SmolLM2 must already be in the cache) or the toy's."""
    from orchestrator.config import compose_config
    from orchestrator.run.sweep import resolve_base_model

    return resolve_base_model(compose_config([f"model={name}", f"cache_dir={Path(cache_dir).expanduser()}"]))


def tiny_model(folder: Path) -> str:
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from tiny_dense import build_tiny_dense

    build_tiny_dense(folder)
    return str(folder)


def run_case(spec: Any, k: int, packed: bool, warmup: int, steps: int, out: str, words: int) -> None:
    """One case on this rank: build the engine, warm up, time `steps` steps; rank 0 writes the figures."""
    import torch

    from workers.train.trainer import encode_labels, init_distributed, rank_and_world

    init_distributed(spec.train.dist_backend)
    rank, world = rank_and_world()
    if not torch.cuda.is_available():
        torch.set_num_threads(spec.train.torch_threads)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    encoded = encode_labels(tokenizer, examples(4 * spec.train.batch_size, words), {}, spec.max_seq_len)
    specs = [replace(spec, lr=1e-4 * (i + 1), seed=i) for i in range(k)]
    step = _stepper(specs, packed, world, encoded, tokenizer.pad_token_id)
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    if rank == 0:
        Path(out).write_text(json.dumps({"k": k, "packed": packed, "step_s": seconds / steps,
                                         "trial_steps_per_s": k * steps / seconds, "peak_gpu_gib": peak}))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _stepper(specs: list[Any], packed: bool, world: int, encoded: list[dict], pad_id: int) -> Any:
    """A function that runs one optimizer step of the case: a pack of len(specs), or one lone trial."""
    from workers.train.batching import batch_indices

    spec = specs[0]
    streams = [batch_indices(len(encoded), spec.train.batch_size, s.seed) for s in specs]
    if packed:
        from workers.train.pack_train import build_pack_engine, packed_train_step

        engine, route, _ = build_pack_engine(specs, world, lambda line: None)
        engine.train()
        return lambda: packed_train_step(engine, route, spec, {i: [encoded[j] for j in next(s)]
                                                               for i, s in enumerate(streams)}, pad_id)
    from workers.train.trainer import build_engine, train_step

    engine = build_engine(spec, world, lambda line: None)
    engine.train()
    return lambda: train_step(engine, spec, [encoded[j] for j in next(streams[0])], pad_id)


def _rank(rank: int, world: int, port: int, args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    run_case(*args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips teardown, where gloo's threads can abort a finished rank (bench/load_memory.end_finished_rank)


def launch(world: int, args: tuple, deadline_s: float) -> None:
    """run_case on `world` fresh processes that form one group; fails loudly on a crash or a hang."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, world, port, args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + deadline_s
    try:
        while any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"case {args[1:3]} failed: exit codes {[p.exitcode for p in procs]}")
            time.sleep(0.2)
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"case {args[1:3]} failed: exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="a model config name (model=...): smollm2_135m, toy")
    parser.add_argument("--model-path", default=None, help="a local model folder (wins over --model)")
    parser.add_argument("--ks", default="1,2,4,8", help="pack sizes to time")
    parser.add_argument("--batch", type=int, default=4, help="sequences per trial per step (over all ranks)")
    parser.add_argument("--micro", type=int, default=2, help="micro-batch per rank per trial")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--words", type=int, default=24, help="words per answer (prompts: 2/3 of that)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--ranks", type=int, default=2, help="CPU: gloo ranks (ZeRO-3 over them)")
    parser.add_argument("--zero", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="one CUDA GPU, bf16, NCCL (the lent device)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny random model, 1 rank, K=1,2, 1 step")
    parser.add_argument("--cache-dir", default=os.environ.get("LRSWEEP_CACHE", str(Path.home() / ".cache" / "lrsweep")))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--deadline-s", type=float, default=1200)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from workers.train.config import unplanned
    from workers.train.trainer import TrainSpec

    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pack_speed_"))
    if args.cpu_smoke:
        args.ks, args.steps, args.warmup, args.ranks, args.batch, args.micro = "1,2", 1, 0, 1, 4, 2
        path, device, dtype = tiny_model(tmp / "tiny"), "cpu-smoke", "float32"
    else:
        path = args.model_path or model_path(args.model, args.cache_dir)
        device, dtype = ("gpu", "bfloat16") if args.gpu else ("cpu", "float32")
    world = 1 if args.gpu else args.ranks
    spec = TrainSpec(model_path=path, dtype=dtype, lora_target_modules=TARGETS, lr=1e-4, seed=0, max_steps=10**6,
                     checkpoint_steps=[], max_seq_len=256,
                     train=unplanned(batch_size=args.batch, micro_batch_size=args.micro, zero_stage=args.zero,
                                     loss_chunk_tokens=4096, state_every_s=0))
    load = os.getloadavg()[0]  # other work on the machine slows every case; the ratios are taken side by side
    cases = [(1, False)] + [(int(k), True) for k in args.ks.split(",")]
    rows = []
    for k, packed in cases:
        out = tmp / f"k{k}_{packed}.json"
        launch(world, (spec, k, packed, args.warmup, args.steps, str(out), args.words), args.deadline_s)
        rows.append(json.loads(out.read_text()))
        print(f"[pack_speed] {'pack' if packed else 'alone'} K={k}: {rows[-1]['trial_steps_per_s']:.3f} "
              f"trial-steps/s", flush=True)
    alone, pack1 = rows[0]["trial_steps_per_s"], rows[1]["trial_steps_per_s"]
    for row in rows:  # vs a lone PEFT trial, and vs a pack of one (the packed layer's own cost set aside)
        row["ratio_vs_unpacked"] = round(row["trial_steps_per_s"] / alone, 3)
        row["ratio_vs_pack_k1"] = round(row["trial_steps_per_s"] / pack1, 3)
    result = {"device": device, "model": "tiny" if args.cpu_smoke else args.model, "ranks": world,
              "zero_stage": args.zero, "batch_per_trial": args.batch, "micro_per_rank": args.micro,
              "steps": args.steps, "warmup": args.warmup, "words_per_answer": args.words, "dtype": dtype,
              "host": platform.node(), "cpus": os.cpu_count(), "load_avg_1m_start_end": [load, os.getloadavg()[0]],
              "cases": rows}
    out = args.out or ROOT / "bench" / "results" / f"pack_speed_{device}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
