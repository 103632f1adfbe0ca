"""The packed trainer: K trials of one setting (their LRs and seeds) in one DeepSpeed engine (workers/train/packed.py).

Each member sees exactly the batches it would see alone (its own seeded order), is updated by its own optimizer
param group (its LR) and writes its adapters into its own trial folder at the same checkpoint steps as alone. The
pack's trainer state (every member's adapter, Adam state, the step and the losses not yet written) is one DeepSpeed
checkpoint in the pack's folder (sweep_dir/packs/<name>/state); a resume restores every member from it. A member
that early stopping drops leaves the batch: the pack goes on with the rest, and ends when none is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from eval.heartbeat import write_heartbeat
from eval.runfiles import step_name
from workers.train.state import StateSchedule, load_state, read_resume_point, save_state
from workers.train.trainer import (
    CheckpointHook,
    TrainSpec,
    _quiet,
    broadcast_from_rank0,
    deepspeed_config,
    encode_labels,
    init_distributed,
    rank_and_world,
)

# rank 0 asks after every step which members early stopping drops (their indices)
DropPoll = Callable[[int], list[int]]


def build_pack_engine(specs: list[TrainSpec], world: int, log: Callable[[str], None]) -> tuple[Any, Any, list]:
    """(engine, route, packed layers): the base loaded once (ZeRO-3 partitioned as in workers/train/trainer.py), K
    slots of
    LoRA per targeted layer and expert weight (workers/train/packed_experts.py), one Adam param group per member with
    that
    member's LR."""
    import deepspeed
    import torch

    from workers.train.pack_rules import pack_refusals
    from workers.train.packed import install_packed_lora, install_packed_loss
    from workers.train.trainer import build_base_model

    spec = specs[0]
    problems = pack_refusals(spec.train, len(specs))
    if problems:
        raise ValueError("; ".join(problems))
    ds_config = deepspeed_config(spec, world)
    model, dschf = build_base_model(spec, ds_config, log)
    route, layers = install_packed_lora(model, list(spec.lora_target_modules), [s.lora_seed for s in specs],
                                        spec.train.lora_rank, spec.train.lora_alpha)
    if spec.lora_expert_parameters:  # after install_packed_lora, which freezes the base
        from workers.train.packed_experts import install_packed_experts

        layers += install_packed_experts(model, list(spec.lora_expert_parameters), [s.lora_seed for s in specs],
                                         spec.train.lora_rank, spec.train.lora_alpha, route)
    model._lrsweep_hf_ds_config = dschf
    install_packed_loss(model, route, spec.train.loss_chunk_tokens)
    groups = [{"params": [p for layer in layers for p in layer.slot_params(slot)], "lr": s.lr}
              for slot, s in enumerate(specs)]
    t = spec.train
    optimizer = torch.optim.Adam(groups, lr=spec.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return engine, route, layers


def packed_train_step(engine: Any, route: Any, spec: TrainSpec, batches: dict[int, list[dict[str, list[int]]]],
                      pad_id: int) -> dict[int, float]:
    """One optimizer step for the active members (slot -> that member's whole batch); returns each member's mean
    loss per answer token, as train_step returns it alone. Every member's batch is split into ranks and
    micro-batches as alone; micro-batch k of a rank stacks every member's k-th micro-batch, slot by slot."""
    import torch

    from workers.train.batching import collate, micro_batches_by_rank
    from workers.train.loss import answer_tokens, loss_chunks

    rank, world = rank_and_world()
    micro, accum = engine.train_micro_batch_size_per_gpu(), engine.gradient_accumulation_steps()
    slots = sorted(batches)
    parts = {s: micro_batches_by_rank(batches[s], world, micro, accum, by_length=True) for s in slots}
    num_items = torch.tensor([answer_tokens(batches[s]) / (accum * world) for s in slots], dtype=torch.float64)
    route.slots = slots
    totals = torch.zeros(len(slots), dtype=torch.float64)
    for k in range(accum):
        rows = [e for s in slots for e in parts[s][rank][k]]
        inputs = {key: t.to(engine.device) for key, t in collate(rows, pad_id).items()}
        num_chunks = max(loss_chunks(sum(answer_tokens(parts[s][r][k]) for s in slots), spec.train.loss_chunk_tokens)
                         for r in range(world))
        loss = engine(**inputs, num_items=num_items, num_chunks=num_chunks)
        engine.backward(loss)
        engine.step()
        totals += route.last_losses.to("cpu", torch.float64) / accum
    if world > 1:
        totals = totals.to(engine.device)
        torch.distributed.all_reduce(totals)
        totals = totals.cpu() / world
    return {s: float(v) for s, v in zip(slots, totals.tolist(), strict=True)}


def save_member_adapter(layers: list, spec: TrainSpec, slot: int, out_dir: Path) -> Path:
    """Member `slot`'s adapter in PEFT's format; rank 0 writes. Collective."""
    import torch

    from workers.train.packed import slot_state, write_peft_adapter

    state = slot_state(layers, slot, spec.dtype)
    if rank_and_world()[0] == 0:
        write_peft_adapter(state, out_dir, spec.model_path, list(spec.lora_target_modules), spec.train.lora_rank,
                           spec.train.lora_alpha, list(spec.lora_expert_parameters))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return out_dir


def _check_pack(specs: list[TrainSpec]) -> None:
    first = replace(specs[0], lr=0.0, seed=0, init_seed=0)
    for s in specs[1:]:
        if replace(s, lr=0.0, seed=0, init_seed=0) != first:
            raise ValueError("a pack's members must differ only in lr and seeds (one step budget per pack: "
                             "orchestrator/run/pack.py packs trials of equal max_steps together)")


def train_pack(specs: list[TrainSpec], examples: list[dict[str, str]], out_dirs: list[Path], state_dir: Path,
               hooks: list[CheckpointHook], active: list[bool] | None = None, log: Callable[[str], None] = print,
               should_drop: DropPoll | None = None, timings: dict[str, float] | None = None,
               after_checkpoint: Callable[[int], None] | None = None) -> int:
    """Train the pack's members (specs[i] -> out_dirs[i], hooks[i]) for max_steps; the packed counterpart of
    workers.train.trainer.train (same checkpoints, state schedule, heartbeats, timings and `after_checkpoint`, called
    once
    per checkpoint after every member's hook). `active[i]` False: member i
    is already finished and does not train. Returns the step the pack resumed from."""
    began = time.time()
    import torch

    _check_pack(specs)
    spec = specs[0]
    clock = timings if timings is not None else {}
    for key in ("setup_s", "train_steps_s", "checkpoint_save_s", "hook_s", "poll_s"):
        clock.setdefault(key, 0.0)
    schedule = StateSchedule(spec.train.state_every_s, spec.save_request_file)
    device, owned = init_distributed(spec.train.dist_backend, spec.require_cuda, spec.train.collective_timeout_s)
    rank, world = rank_and_world()
    log = log if rank == 0 else _quiet
    from transformers import AutoTokenizer

    if device == "cpu":
        torch.set_num_threads(spec.train.torch_threads)
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    engine, route, layers = build_pack_engine(specs, world, log)
    # rank 0's view of who is finished (other ranks of a multi-worker pack pass none)
    active = broadcast_from_rank0(list(active) if active is not None else [True] * len(specs))
    loop = _PackLoop(specs, engine, route, layers, out_dirs, state_dir, hooks, schedule, clock, log, active,
                     after_checkpoint)
    try:
        encoded = encode_labels(tokenizer, examples, spec.chat_template_kwargs, spec.max_seq_len)
        start = loop.resume()
        clock["setup_s"] += time.time() - began
        loop.run(start, encoded, tokenizer.pad_token_id, should_drop)
        return start
    finally:
        if hasattr(engine, "destroy"):
            engine.destroy()
        if owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class _PackLoop:
    """The step loop of train_pack: state, checkpoints and drops for every member."""

    def __init__(self, specs: list[TrainSpec], engine: Any, route: Any, layers: list, out_dirs: list[Path],
                 state_dir: Path, hooks: list[CheckpointHook], schedule: StateSchedule, clock: dict[str, float],
                 log: Callable[[str], None], active: list[bool],
                 after_checkpoint: Callable[[int], None] | None = None) -> None:
        self.specs, self.engine, self.route, self.layers = specs, engine, route, layers
        self.out_dirs, self.state_dir, self.hooks, self.schedule = out_dirs, state_dir, hooks, schedule
        self.clock, self.log, self.active = clock, log, active
        self.rank = rank_and_world()[0]
        self.losses: list[list[float]] = [[] for _ in specs]
        self.checkpoints = set(specs[0].checkpoint_steps)
        self.after_checkpoint = after_checkpoint

    def resume(self) -> int:
        point = broadcast_from_rank0(read_resume_point(self.state_dir) if self.rank == 0 else None)
        start, losses = load_state(self.engine, self.state_dir, point) if point else (0, [])
        if losses:
            self.losses = [list(m) for m in losses]
        self.clock["last_step"] = start
        if start:
            self.log(f"[train] pack of {len(self.specs)} resuming from step {start}")
        elif 0 in self.checkpoints:
            self.checkpoint(0)
        return start

    def checkpoint(self, step: int) -> None:
        from workers.train.trainer import release_gpu_cache

        t0 = time.time()
        hook_s = 0.0
        release_gpu_cache(self.specs[0])  # before any member's hook can wake a sampler that shares the GPUs
        for slot, spec in enumerate(self.specs):
            if not self.active[slot]:
                continue
            adapter = save_member_adapter(self.layers, spec, slot, self.out_dirs[slot] / "adapters" / step_name(step))
            losses = self.losses[slot]
            info = {"train_loss": sum(losses) / len(losses) if losses else None, "step_losses": losses}
            t1 = time.time()
            if self.rank == 0:
                self.hooks[slot](step, adapter, info)
            hook_s += time.time() - t1
            self.losses[slot] = []
        t1 = time.time()
        if self.rank == 0 and self.after_checkpoint is not None:
            self.after_checkpoint(step)
        hook_s += time.time() - t1
        save_state(self.engine, self.state_dir, step, [])
        self.schedule.saved()
        self.clock["checkpoint_save_s"] += time.time() - t0 - hook_s
        self.clock["hook_s"] += hook_s

    def poll(self, step: int, start: int, should_drop: DropPoll | None) -> None:
        """Rank 0 decides drops and state saves after each step; every rank follows (one broadcast)."""
        t0 = time.time()
        drop, save = [], None
        if self.rank == 0:
            drop, save = (should_drop(step - 1) if should_drop else []), self.schedule.due()
        drop, save = broadcast_from_rank0((drop, save))
        self.clock["poll_s"] += time.time() - t0
        if save and step - 1 > start and step - 1 not in self.checkpoints:
            t0 = time.time()
            save_state(self.engine, self.state_dir, step - 1, self.losses)
            self.schedule.saved()
            self.clock["checkpoint_save_s"] += time.time() - t0
            self.log(f"[train] pack state saved after step {step - 1} ({save})")
        for slot in drop:
            self.active[slot] = False
            self.log(f"[train] lr={self.specs[slot].lr:g} leaves the pack after step {step - 1} (stopped early)")

    def run(self, start: int, encoded: list[dict[str, list[int]]], pad_id: int, should_drop: DropPoll | None) -> None:
        from workers.train.batching import batch_indices

        spec = self.specs[0]
        streams = [batch_indices(len(encoded), spec.train.batch_size, s.seed, start_step=start) for s in self.specs]
        started = time.time()
        self.schedule.saved()
        self.engine.train()
        for step in range(start + 1, spec.max_steps + 1):
            self.poll(step, start, should_drop)
            if not any(self.active):
                break
            t0 = time.time()
            batches = {}
            for slot, stream in enumerate(streams):
                indices = next(stream)  # every member's stream advances, so a member's order never depends on others
                if self.active[slot]:
                    batches[slot] = [encoded[i] for i in indices]
            for slot, loss in packed_train_step(self.engine, self.route, spec, batches, pad_id).items():
                self.losses[slot].append(loss)
            self.clock["train_steps_s"] += time.time() - t0
            self.clock["last_step"] = step
            if self.rank == 0:
                for slot in batches:
                    write_heartbeat(self.out_dirs[slot], step, max_steps=spec.max_steps)
            if step in self.checkpoints:
                self.log(f"[train] pack of {len(batches)} step {step}/{spec.max_steps} "
                         f"({(time.time() - started) / (step - start):.2f}s/step)")
                self.checkpoint(step)
