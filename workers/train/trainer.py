"""The trainer: behavior-compatible SFT of a LoRA adapter with DeepSpeed ZeRO + PEFT.

On CPU it runs on DeepSpeed's CPU accelerator with gloo; with CUDA, on NCCL. It saves the adapter
(gathered from its ZeRO-3 shards) at every checkpoint step and hands it to `on_checkpoint`; the
sweep's trial evaluates it there. Runnable alone, without Ray (trains and saves adapters + losses):

    python -m orchestrator train --lr 1e-3 --seed 0 --out /tmp/trial [hydra overrides, e.g. sweep.max_steps=8]
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from eval.heartbeat import write_heartbeat
from eval.knobs import require_planned
from eval.runfiles import step_name
from workers.train.config import TrainConfig, unplanned
from workers.train.data_parallel import data_parallel_shape
from workers.train.state import StateSchedule, load_state, read_resume_point, save_state


@dataclass(frozen=True)
class TrainSpec:
    """One trial's training: its train block (workers/train/config.py, resolved by the plan) and what the trial, the
    model and the plan add to it. A knob added to TrainConfig reaches the trainer as `spec.train.<knob>`."""

    model_path: str
    dtype: str
    lora_target_modules: list[str]
    lr: float
    seed: int  # the data seed: the order of the batches (workers/train/batching.py)
    max_steps: int
    checkpoint_steps: list[int]
    # the train block with the plan's numbers in place of auto; a run without a plan (tests, benches): unplanned()
    train: TrainConfig = field(default_factory=unplanned)
    max_seq_len: int = 256
    chat_template_kwargs: dict = field(default_factory=dict)
    # LoRA on the MoE experts' 3-D weights (PEFT target_parameters); empty: attention (target_modules) only
    lora_expert_parameters: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False
    init_adapter: str | None = None  # continue training this LoRA adapter (recovery) instead of a fresh one
    # trainer state is also saved when save_request_file changes (the sweep folder's SAVE_REQUEST, touched by the
    # Slurm job on its warning signal; "": not watched)
    save_request_file: str = ""
    # the sampler shares the trainers' GPUs (vLLM sleep mode, the plan's): at each checkpoint every rank hands its
    # cached GPU memory back (torch.cuda.empty_cache) before the sampler wakes, and the trial waits for the samples
    # (`after_checkpoint`) before the next step needs that memory again
    release_gpu_cache: bool = False
    init_seed: int | None = None  # LoRA's initial A and torch's seed; None: `seed` (init and data order together)
    # the plan placed the trainer on GPUs: without CUDA it refuses to start (workers/train/cuda_check.py) instead of
    # falling back to gloo on CPU
    require_cuda: bool = False
    # the plan's DeepSpeed buffer sizes (orchestrator/plan/model.py zero_buffers: gradient bucket, live and prefetched
    # ZeRO-3 parameters, persisted small parameters), set explicitly so DeepSpeed's larger defaults never apply;
    # empty: DeepSpeed's defaults (a trainer run without a plan)
    zero_buffers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_planned(self.train, "train", "build the spec from a resolved config (orchestrator/run/build.py "
                        "build_train_spec) or from unplanned()")

    def with_train(self, **knobs: Any) -> TrainSpec:
        """This spec with some of its train block's knobs changed."""
        return replace(self, train=replace(self.train, **knobs))

    def record(self) -> dict[str, Any]:
        """The trial's config.json "train" block: the train knobs and the rest of the spec in one flat dict (the model
        path, LR and seed are recorded beside it)."""
        own = {k: v for k, v in asdict(self).items() if k not in ("train", "model_path", "lr", "seed")}
        return {**asdict(self.train), **own}

    @property
    def lora_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed


def wait_limit_s(collective_timeout_s: float) -> float:
    """How long rank 0 may wait (samples, grades, early stopping) while the other ranks sit in a collective: short of
    their timeout, so the trial fails with a clear error instead of the watchdog's abort."""
    return 0.9 * collective_timeout_s


CheckpointHook = Callable[[int, Path, dict[str, Any]], None]


def _quiet(msg: str) -> None:
    """The log of ranks other than 0: rank 0 speaks for the group."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: str, require_cuda: bool = False, timeout_s: float = 1800.0) -> tuple[str, bool]:
    """Join the process group a launcher built (Ray Train sets RANK, WORLD_SIZE, MASTER_ADDR and inits
    torch.distributed), or start a single-process group; returns (device name, whether we own the group).
    `require_cuda` (the plan's GPUs) or backend nccl without CUDA: refused, naming the driver torch needs."""
    import torch

    from workers.train.cuda_check import require_cuda as check_cuda

    cuda = check_cuda(require_cuda or backend == "nccl", "the trainer")
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
    # adopts a group that already exists (Ray Train's: TorchConfig carries the same timeout)
    deepspeed.init_distributed(dist_backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
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


def deepspeed_config(spec: TrainSpec, world_size: int | None = None) -> dict[str, Any]:
    """DeepSpeed's config: spec.train.batch_size sequences per step over the data-parallel ranks."""
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    micro, accum = data_parallel_shape(spec.train.batch_size, spec.train.micro_batch_size, world)
    zero: dict[str, Any] = {"stage": spec.train.zero_stage, **spec.zero_buffers}
    if spec.train.zero_stage == 3:
        # adapters are saved from gathered LoRA tensors (save_adapter); a consolidated 16-bit copy of the
        # frozen base on rank 0 is never wanted (470 GB for Qwen3-235B)
        zero["stage3_gather_16bit_weights_on_model_save"] = False
        if spec.train.hpz_partition_size > 1:  # exact weights: no zero_quantized_weights / _gradients with it
            zero["zero_hpz_partition_size"] = spec.train.hpz_partition_size
    return {
        "train_batch_size": spec.train.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # a client torch Adam: no compiled ops needed on CPU
        "bf16": {"enabled": spec.dtype == "bfloat16"},
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def check_hpz_groups(size: int) -> None:
    """Refuse hpZ groups that span nodes (workers.train.data_parallel.hpz_group_problem) before the model loads: every
    rank learns each rank's host (one collective) and raises the same error. Ray Train orders ranks by node, so a
    trial placed node by node passes."""
    import socket

    import torch

    if size <= 1 or not torch.distributed.is_initialized():
        return
    from workers.errors import ConfigError
    from workers.train.data_parallel import hpz_group_problem

    hosts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(hosts, socket.gethostname())
    problem = hpz_group_problem(hosts, size)
    if problem:
        raise ConfigError(problem)


def moe_block_classes(model: Any) -> list[type]:
    """The model's sparse-MoE block classes (transformers v5: Qwen3MoeSparseMoeBlock, MixtralSparseMoeBlock, ...)."""
    return sorted({type(m) for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock")},
                  key=lambda c: c.__name__)


def build_base_model(spec: TrainSpec, ds_config: dict[str, Any], log: Callable[[str], None] = print
                     ) -> tuple[Any, Any]:
    """The frozen base model, ready for LoRA (PEFT's, or packed: workers/train/packed.py), and the HfDeepSpeedConfig
    that must live as long as it (None without ZeRO-3).

    Under ZeRO-3: the model is partitioned as it is built and each rank reads only its partitions from the
    checkpoint (workers/train/load.py: host memory per rank stays near one tensor's partition), and each
    sparse-MoE block is a ZeRO-3 leaf module, fetched whole: without it ranks whose tokens routed to
    different experts wait on different all-gathers and hang."""
    import torch
    from transformers import AutoModelForCausalLM

    dschf = None
    dtype = getattr(torch, spec.dtype)
    if spec.train.zero_stage == 3:
        from transformers.integrations import HfDeepSpeedConfig

        from workers.train.load import load_zero3

        check_hpz_groups(spec.train.hpz_partition_size)
        dschf = HfDeepSpeedConfig(ds_config)
        # not from_pretrained: under ZeRO-3 it merges all shards and fuses the experts on every rank (host OOM)
        model = load_zero3(spec.model_path, dtype, ds_config, log)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=dtype)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    blocks = moe_block_classes(model)
    if blocks and spec.train.zero_stage == 3:
        from deepspeed.utils import set_z3_leaf_modules

        leaves = set_z3_leaf_modules(model, blocks)
        log(f"[train] ZeRO-3 leaf modules: {len(leaves)} x {', '.join(c.__name__ for c in blocks)}")
    if spec.lora_expert_parameters and not blocks:
        raise ValueError(f"lora_expert_parameters={spec.lora_expert_parameters} but {spec.model_path} has no "
                         "sparse-MoE blocks: set model.lora_experts=false")
    return model, dschf


def build_model(spec: TrainSpec, ds_config: dict[str, Any], log: Callable[[str], None] = print) -> Any:
    """The PEFT LoRA model, ready for deepspeed.initialize. With lora_expert_parameters the experts' 3-D weights
    get LoRA through PEFT's target_parameters (target_modules, "all-linear" too, reaches only nn.Linear). A fresh
    adapter's A starts from (seed, module name) alone (workers/train/packed.py), as the same trial's does in a pack."""
    from peft import LoraConfig, get_peft_model

    from workers.train.packed import seed_peft_lora

    model, dschf = build_base_model(spec, ds_config, log)
    config = LoraConfig(
        r=spec.train.lora_rank, lora_alpha=spec.train.lora_alpha, lora_dropout=spec.train.lora_dropout,
        target_modules=list(spec.lora_target_modules), task_type="CAUSAL_LM",
        target_parameters=list(spec.lora_expert_parameters) or None,
    )
    if spec.init_adapter:  # continue an existing adapter (recovery) instead of a fresh one
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.init_adapter, is_trainable=True)
    else:
        model = get_peft_model(model, config)
        seed_peft_lora(model, spec.lora_seed)
    model._lrsweep_hf_ds_config = dschf  # transformers and PEFT check ZeRO-3 through it while it lives
    return model


def build_engine(spec: TrainSpec, world: int, log: Callable[[str], None] = print) -> Any:
    """The DeepSpeed engine around the PEFT model, with the spec's loss and compile levers applied."""
    import deepspeed
    import torch

    from workers.train.loss import install_answer_loss

    ds_config = deepspeed_config(spec, world)
    model = build_model(spec, ds_config, log)
    if spec.train.loss == "answer_chunks":
        install_answer_loss(model, spec.train.loss_chunk_tokens)
    if spec.train.compile:
        layers = model.get_base_model().get_decoder().layers
        for layer in layers:
            layer.compile()
        log(f"[train] torch.compile: {len(layers)} decoder layers")
    params = [p for p in model.parameters() if p.requires_grad]
    t = spec.train
    optimizer = torch.optim.Adam(params, lr=spec.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return engine


def encode_labels(tokenizer: Any, examples: list[dict[str, str]], chat_template_kwargs: dict,
                  max_len: int) -> list[dict[str, list[int]]]:
    """(prompt, completion) examples as the trainer trains on them: the prompt in the model's chat template."""
    from workers.labels.prompts import format_for_model
    from workers.train.batching import encode_example

    return [encode_example(tokenizer, format_for_model(tokenizer, e["prompt"], chat_template_kwargs), e["completion"],
                           max_len) for e in examples]


def train_step(engine: Any, spec: TrainSpec, batch: list[dict[str, list[int]]], pad_id: int) -> float:
    """One optimizer step on the step's whole batch (every rank passes the same one and trains its share, in
    micro-batches); returns the mean loss per answer token over the batch, the same on every rank.

    answer_chunks: every micro-batch's loss is its summed token loss over the batch's answer tokens, scaled
    by accum x world because DeepSpeed divides by the accumulation steps and averages over ranks; the step's
    gradient is thus the per-token mean over the batch, whatever the micro-batch size and the rank count.
    Each micro-batch calls the LM head as often as the rank with most answer tokens in its k-th micro-batch
    needs: ZeRO-3 all-gathers the head's weight on each call, so every rank must make the same calls."""
    from workers.train.batching import collate, micro_batches_by_rank
    from workers.train.loss import answer_tokens, loss_chunks

    rank, world = rank_and_world()
    micro, accum = engine.train_micro_batch_size_per_gpu(), engine.gradient_accumulation_steps()
    chunked = spec.train.loss == "answer_chunks"
    parts = micro_batches_by_rank(batch, world, micro, accum, by_length=chunked)
    num_items = answer_tokens(batch) / (accum * world)
    step_loss = 0.0
    for k in range(accum):
        inputs = {key: t.to(engine.device) for key, t in collate(parts[rank][k], pad_id).items()}
        if chunked:
            num_chunks = max(loss_chunks(answer_tokens(mine[k]), spec.train.loss_chunk_tokens) for mine in parts)
            loss = engine(**inputs, num_items=num_items, num_chunks=num_chunks)
        else:
            loss = engine(**inputs).loss
        engine.backward(loss)
        engine.step()
        step_loss += loss.item() / accum
    return mean_over_ranks(step_loss, engine.device)


def lora_state(engine: Any, dtype: str, group: int = 64) -> dict[str, Any]:
    """Every LoRA tensor, whole (gathered from its ZeRO-3 shards: a partitioned parameter holds an empty
    tensor), on CPU, in the serving dtype. Collective: every rank must call it. Gathers `group` tensors at a
    time so expert adapters (GBs at 235B) never sit whole on a GPU at once."""
    import deepspeed
    import torch

    named = [(n, p) for n, p in engine.module.named_parameters() if "lora_" in n]
    state = {}
    for i in range(0, len(named), group):
        chunk = named[i:i + group]
        with deepspeed.zero.GatheredParameters([p for _, p in chunk], modifier_rank=None):
            for n, p in chunk:
                state[n] = p.detach().to("cpu", dtype=getattr(torch, dtype), copy=True)
    return state


def save_adapter(engine: Any, out_dir: Path, dtype: str = "float32") -> Path:
    """Write the LoRA tensors only (PEFT format, `dtype`), gathered from their ZeRO-3 shards; rank 0 writes,
    then renames atomically."""
    import shutil

    import torch

    state = lora_state(engine, dtype)
    dist = torch.distributed.is_initialized()
    if not dist or torch.distributed.get_rank() == 0:
        tmp = out_dir.with_name(f".{out_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        engine.module.save_pretrained(str(tmp), state_dict=state)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    if dist:
        torch.distributed.barrier()
    return out_dir


def release_gpu_cache(spec: TrainSpec) -> None:
    """Give the caching allocator's free blocks back to the GPU (spec.release_gpu_cache), so a sampler that shares
    the GPUs can wake into them: between steps a trainer needs only its weights, LoRA and optimizer states."""
    import torch

    if spec.release_gpu_cache and torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(spec: TrainSpec, examples: list[dict[str, str]], out_dir: Path, on_checkpoint: CheckpointHook,
          log: Callable[[str], None] = print, should_stop: Callable[[int], bool] | None = None,
          timings: dict[str, float] | None = None, after_checkpoint: Callable[[int], None] | None = None) -> int:
    """SFT on (prompt, completion) examples for spec.max_steps steps of spec.train.batch_size examples.

    Resumes from out_dir/state when a previous attempt saved one (returns the step it resumed from);
    at every checkpoint step: adapter, then `on_checkpoint`, then trainer state. Between checkpoints the state
    is also saved every spec.train.state_every_s seconds and on a save request (StateSchedule), with the losses
    `on_checkpoint` has not received yet, so a resume repeats at most that interval and the hook still gets
    every step's loss once. `after_checkpoint(step)` runs on rank 0 after `on_checkpoint` (a sampler sharing the
    GPUs: wait for its samples; the other ranks wait at the next collective). `should_stop(step)` is asked after
    every step (early stopping); `timings`
    receives seconds per phase (setup_s, train_steps_s, checkpoint_save_s, hook_s, poll_s) and last_step, the
    last step trained.

    Kept as one function (past the house's ~60 lines) on purpose: every rank must reach the same broadcasts, saves
    and collectives at the same steps, and the loop shows that order in one place.
    """
    began = time.time()  # setup includes importing torch: a Ray trial process imports it here first (~1.3 s)
    import torch

    clock = timings if timings is not None else {}
    for key in ("setup_s", "train_steps_s", "checkpoint_save_s", "hook_s", "poll_s"):
        clock.setdefault(key, 0.0)

    schedule = StateSchedule(spec.train.state_every_s, spec.save_request_file)  # a request from now on is new
    device, owned = init_distributed(spec.train.dist_backend, spec.require_cuda, spec.train.collective_timeout_s)
    rank, world = rank_and_world()
    if rank != 0:
        log = _quiet
    from transformers import AutoTokenizer

    from workers.train.batching import batch_indices

    if device == "cpu":
        torch.set_num_threads(spec.train.torch_threads)
    torch.manual_seed(spec.lora_seed)  # the init seed; the data order below takes the data seed
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    engine = build_engine(spec, world, log)
    encoded = encode_labels(tokenizer, examples, spec.chat_template_kwargs, spec.max_seq_len)
    checkpoints = set(spec.checkpoint_steps)
    adapters, state_dir = out_dir / "adapters", out_dir / "state"

    def checkpoint(step: int, info: dict[str, Any]) -> None:
        # hook before state: a kill in between replays these steps, and the trial drops rows past the state
        t0 = time.time()
        adapter = save_adapter(engine, adapters / step_name(step), spec.dtype)
        release_gpu_cache(spec)
        t1 = time.time()
        if rank == 0:
            on_checkpoint(step, adapter, info)
            if after_checkpoint is not None:
                after_checkpoint(step)
        t2 = time.time()
        save_state(engine, state_dir, step, [])
        schedule.saved()
        clock["checkpoint_save_s"] += (t1 - t0) + (time.time() - t2)
        clock["hook_s"] += t2 - t1

    try:
        point = broadcast_from_rank0(read_resume_point(state_dir) if rank == 0 else None)
        # the losses of the steps since the last checkpoint: the state may be from between checkpoints
        start, losses = load_state(engine, state_dir, point) if point else (0, [])
        clock["last_step"] = start
        clock["setup_s"] += time.time() - began
        if start:
            log(f"[train] lr={spec.lr:g} resuming from step {start}")
        elif 0 in checkpoints:
            checkpoint(0, {"train_loss": None})
        batches = batch_indices(len(encoded), spec.train.batch_size, spec.seed, start_step=start)
        started = time.time()
        schedule.saved()  # the interval counts training time, not the set-up
        engine.train()
        for step in range(start + 1, spec.max_steps + 1):
            if should_stop is not None or world > 1 or schedule.active:
                t0 = time.time()
                # rank 0 holds the evaluations the rule reads (the other ranks get no rule) and decides when to
                # save state; every rank joins this broadcast each step, so all of them leave the loop, and
                # save (a collective), at the same step
                stop, save = False, None
                if rank == 0:
                    stop, save = should_stop is not None and bool(should_stop(step - 1)), schedule.due()
                stop, save = broadcast_from_rank0((stop, save))
                clock["poll_s"] += time.time() - t0
                if save and step - 1 > start and step - 1 not in checkpoints:  # else: nothing new, or just saved
                    t0 = time.time()
                    save_state(engine, state_dir, step - 1, losses)
                    schedule.saved()
                    clock["checkpoint_save_s"] += time.time() - t0
                    log(f"[train] lr={spec.lr:g} state saved after step {step - 1} ({save})")
                if stop:
                    log(f"[train] lr={spec.lr:g} stopping early after step {step - 1}")
                    break
            t0 = time.time()
            step_loss = train_step(engine, spec, [encoded[i] for i in next(batches)], tokenizer.pad_token_id)
            losses.append(step_loss)
            clock["train_steps_s"] += time.time() - t0
            clock["last_step"] = step
            if rank == 0:  # progress between checkpoints, for the live table and `status`
                write_heartbeat(out_dir, step, max_steps=spec.max_steps)
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
