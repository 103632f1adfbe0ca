"""The trainer: behavior-compatible SFT of a LoRA adapter with DeepSpeed ZeRO + PEFT.

On CPU it runs on DeepSpeed's CPU accelerator with gloo; with CUDA, on NCCL. It saves the adapter
(gathered from its ZeRO-3 shards) at every checkpoint step and hands it to `on_checkpoint`; the
sweep's trial evaluates it there. Runnable alone, without Ray (trains and saves adapters + losses):

    python -m workers.train --lr 1e-3 --seed 0 --out /tmp/trial [hydra overrides, e.g. sweep.max_steps=8]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.runfiles import step_name


@dataclass(frozen=True)
class TrainSpec:
    """One trial's training: the narrow config a trainer needs."""

    model_path: str
    dtype: str
    lora_target_modules: list[str]
    lr: float
    seed: int
    max_steps: int
    checkpoint_steps: list[int]
    batch_size: int = 32
    micro_batch_size: int = 32
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    zero_stage: int = 3
    dist_backend: str = "auto"
    torch_threads: int = 1
    max_seq_len: int = 256
    chat_template_kwargs: dict = field(default_factory=dict)


CheckpointHook = Callable[[int, Path, dict[str, Any]], None]


def _quiet(msg: str) -> None:
    """The log of ranks other than 0: rank 0 speaks for the group."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: str) -> tuple[str, bool]:
    """Join the process group a launcher built (Ray Train sets RANK, WORLD_SIZE, MASTER_ADDR and inits
    torch.distributed), or start a single-process group; returns (device name, whether we own the group)."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if not cuda:
        # DeepSpeed JIT-compiles a shared-memory all-reduce op for CPU groups: one process has nothing to
        # reduce, workers on different nodes share no memory, and a compile killed midway leaves a lock
        # that makes every later start wait forever. Gloo does the (tiny, LoRA-only) reductions.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    owned = not torch.distributed.is_initialized()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    deepspeed.init_distributed(dist_backend=backend)  # adopts a group that already exists
    return ("cuda" if cuda else "cpu"), owned


def rank_and_world() -> tuple[int, int]:
    import torch

    if not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's value on every rank (no-op alone): one reading of shared files for the whole group."""
    import torch

    if rank_and_world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value: float, device: Any) -> float:
    import torch

    if rank_and_world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / rank_and_world()[1]


def deepspeed_config(spec: TrainSpec, world_size: int = 1) -> dict[str, Any]:
    from orchestrator.placement import data_parallel_shape

    micro, accum = data_parallel_shape(spec.batch_size, spec.micro_batch_size, world_size)
    return {
        "train_batch_size": spec.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "zero_optimization": {"stage": spec.zero_stage},
        "zero_allow_untested_optimizer": True,  # a client torch Adam: no compiled ops needed on CPU
        "bf16": {"enabled": spec.dtype == "bfloat16"},
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def save_adapter(engine: Any, out_dir: Path) -> Path:
    """Write the LoRA tensors only (PEFT format), gathered from their ZeRO-3 shards; atomic rename.
    Every rank joins the gather; rank 0 alone writes."""
    import deepspeed

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    lora = [p for n, p in engine.module.named_parameters() if "lora_" in n]
    main = rank_and_world()[0] == 0
    with deepspeed.zero.GatheredParameters(lora, modifier_rank=None):
        if main:
            engine.module.save_pretrained(str(tmp))
    if not main:
        return out_dir
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


class ResumeError(RuntimeError):
    """Trainer state on disk that cannot be loaded; the message names the folder and the fix."""


def read_resume_point(state_dir: Path) -> dict[str, Any] | None:
    """The last complete trainer state ({"step", "tag"}), or None when the trial never saved one."""
    import json

    path = state_dir / "resume.json"
    if not path.exists():
        return None
    try:
        point = json.loads(path.read_text())
        return {"step": int(point["step"]), "tag": str(point["tag"])}
    except (ValueError, KeyError, TypeError) as err:
        raise ResumeError(f"{path} is corrupt ({err}): delete {state_dir.parent} to restart this trial") from None


def save_state(engine: Any, state_dir: Path, step: int) -> None:
    """Adapter + optimizer + RNG + data position (the step), frozen base weights excluded. Every rank
    writes its own shards (DeepSpeed ends the save with a barrier); rank 0 then moves the resume
    point and removes older states."""
    import random
    import shutil

    import torch

    from eval.runfiles import write_json

    tag = step_name(step)
    client = {"step": step, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    engine.save_checkpoint(str(state_dir), tag=tag, client_state=client, save_latest=False,
                           exclude_frozen_parameters=True)
    if rank_and_world()[0] != 0:
        return
    write_json(state_dir / "resume.json", {"step": step, "tag": tag})
    for old in state_dir.glob("step_*"):
        if old.name != tag:
            shutil.rmtree(old, ignore_errors=True)


def load_state(engine: Any, state_dir: Path, point: dict[str, Any]) -> int:
    import random

    import torch

    try:
        _, client = engine.load_checkpoint(str(state_dir), tag=point["tag"], load_module_strict=False)
    except Exception as err:  # DeepSpeed raises several types for missing or truncated files
        raise ResumeError(f"cannot load trainer state {state_dir / point['tag']} ({type(err).__name__}: {err}): "
                          f"delete {state_dir.parent} to restart this trial from scratch") from err
    if client is None or client.get("step") != point["step"]:
        raise ResumeError(f"trainer state {state_dir / point['tag']} is incomplete: delete {state_dir.parent} "
                          "to restart this trial from scratch")
    torch.set_rng_state(client["torch_rng"])
    random.setstate(client["python_rng"])
    return point["step"]


def train(spec: TrainSpec, examples: list[dict[str, str]], out_dir: Path, on_checkpoint: CheckpointHook,
          log: Callable[[str], None] = print) -> int:
    """SFT on (prompt, completion) examples for spec.max_steps steps of spec.batch_size examples.

    Resumes from out_dir/state when a previous attempt saved one (returns the step it resumed from);
    at every checkpoint step: adapter, then `on_checkpoint`, then trainer state. Under a launcher
    (Ray Train) with N processes each trains its 1/N of every batch (ZeRO data parallel); rank 0
    alone writes files, logs and calls `on_checkpoint`, and out_dir must be storage all ranks share.
    """
    import torch

    device, owned = init_distributed(spec.dist_backend)
    rank, world = rank_and_world()
    if rank != 0:
        log = _quiet
    import deepspeed
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.batching import batch_indices, collate, encode_example
    from workers.prompts import format_for_model

    if device == "cpu":
        torch.set_num_threads(spec.torch_threads)
    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=getattr(torch, spec.dtype))
    model = get_peft_model(model, LoraConfig(
        r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
        target_modules=list(spec.lora_target_modules), task_type="CAUSAL_LM",
    ))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=spec.lr, betas=tuple(spec.betas), weight_decay=spec.weight_decay)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(spec, world))
    encoded = [
        encode_example(tokenizer, format_for_model(tokenizer, e["prompt"], spec.chat_template_kwargs),
                       e["completion"], spec.max_seq_len)
        for e in examples
    ]
    micro, accum = engine.train_micro_batch_size_per_gpu(), engine.gradient_accumulation_steps()
    share = micro * accum
    checkpoints = set(spec.checkpoint_steps)
    adapters, state_dir = out_dir / "adapters", out_dir / "state"

    def checkpoint(step: int, info: dict[str, Any]) -> None:
        # hook before state: a kill in between replays these steps, and the trial drops rows past the state
        adapter = save_adapter(engine, adapters / step_name(step))
        if rank == 0:
            on_checkpoint(step, adapter, info)
        save_state(engine, state_dir, step)

    try:
        point = broadcast_from_rank0(read_resume_point(state_dir) if rank == 0 else None)
        start = load_state(engine, state_dir, point) if point else 0
        if start:
            log(f"[train] lr={spec.lr:g} resuming from step {start}")
        elif 0 in checkpoints:
            checkpoint(0, {"train_loss": None})
        batches = batch_indices(len(encoded), spec.batch_size, spec.seed, start_step=start)
        losses: list[float] = []
        started = time.time()
        engine.train()
        for step in range(start + 1, spec.max_steps + 1):
            idx = next(batches)[rank * share:(rank + 1) * share]  # this worker's share of the batch
            step_loss = 0.0
            for k in range(accum):
                part = idx[k * micro:(k + 1) * micro]
                batch = {key: t.to(engine.device) for key, t in collate([encoded[i] for i in part],
                                                                        tokenizer.pad_token_id).items()}
                loss = engine(**batch).loss
                engine.backward(loss)
                engine.step()
                step_loss += loss.item() / accum
            losses.append(mean_over_ranks(step_loss, engine.device))
            if step in checkpoints:
                mean = sum(losses) / len(losses)
                log(f"[train] lr={spec.lr:g} step {step}/{spec.max_steps} loss {mean:.4f} "
                    f"({(time.time() - started) / (step - start):.2f}s/step)")
                checkpoint(step, {"train_loss": mean, "step_losses": losses})
                losses = []
        return start
    finally:
        if hasattr(engine, "destroy"):
            engine.destroy()
        if owned and torch.distributed.is_initialized():  # a launcher's group is the launcher's to end
            torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    from eval.runfiles import append_jsonl
    from orchestrator.config import compose_config, settings_for_toy
    from workers.teacher import ensure_labels, read_labels
    from workers.toy import ensure_toy

    parser = argparse.ArgumentParser(description="Train one LoRA trial without Ray (no evaluation).")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args, overrides = parser.parse_known_args(argv)
    cfg = compose_config(overrides)
    out = args.out.resolve()
    model_path = cfg.model.path or str(ensure_toy(cfg.model.toy, settings_for_toy(cfg), cfg.cache_dir))
    examples = read_labels(ensure_labels(cfg.setting, out))
    spec = build_train_spec(cfg, model_path, args.lr, args.seed)

    def record(step: int, adapter: Path, info: dict[str, Any]) -> None:
        append_jsonl(out / "metrics.jsonl", {"step": step, "train_loss": info["train_loss"], "adapter": str(adapter)})

    train(spec, examples, out, record)


def build_train_spec(cfg: Any, model_path: str, lr: float, seed: int) -> TrainSpec:
    from eval.metrics import checkpoint_steps

    t, m = cfg.train, cfg.model
    return TrainSpec(
        model_path=model_path, dtype=m.dtype, lora_target_modules=list(m.lora_target_modules), lr=lr, seed=seed,
        max_steps=cfg.sweep.max_steps, checkpoint_steps=checkpoint_steps(cfg.sweep.max_steps),
        batch_size=t.batch_size, micro_batch_size=t.micro_batch_size, optimizer=t.optimizer,
        lr_schedule=t.lr_schedule, lora_rank=t.lora_rank,
        lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, betas=tuple(t.betas), weight_decay=t.weight_decay,
        zero_stage=t.zero_stage, dist_backend=t.dist_backend, torch_threads=t.torch_threads,
        max_seq_len=m.max_model_len, chat_template_kwargs=dict(m.chat_template_kwargs),
    )


if __name__ == "__main__":
    main()
