"""Load a hub checkpoint into a ZeRO-3 model with bounded host memory: each rank reads only its own partition.

transformers 5.x under ZeRO-3 (`from_pretrained` with `HfDeepSpeedConfig` alive) merges every checkpoint shard
into one state dict and fuses the per-expert MoE weights in host RAM on every rank before partitioning:
~450 GB per rank for Qwen3-235B-A22B. Here instead:

1. the model is built from its config under `deepspeed.zero.Init`: each module's parameters are partitioned as
   soon as the module exists (random init is skipped: every weight is overwritten), so no whole model exists;
2. every parameter's value is described as a sequence of checkpoint tensors whose flattened concatenation is the
   flattened parameter: one tensor for most, and for a fused MoE expert weight the per-expert tensors in the
   order transformers' conversion mapping fuses them (qwen2_moe family: `gate_up_proj[e] = cat(gate_e, up_e)`,
   `down_proj[e] = down_e`, stacked over experts);
3. each rank reads, with safetensors slices, only the rows that overlap its own flat partition
   (`ds_tensor`, elements [rank * n, (rank + 1) * n) of the flattened parameter) and copies them straight in;
   with hpZ (ZeRO++ `zero_hpz_partition_size` > 1) it fills its secondary partition (`ds_secondary_tensor`, sharded
   over its hpZ group) the same way, since every fetch gathers from that copy.

Host memory per rank beyond its own partitions (which live on the GPU when there is one): the rows of one
checkpoint tensor that fall in one partition (an expert matrix, or 1/world of the embedding), plus the module
being built under zero.Init (one layer's experts, whole, for an instant). No collective runs while loading,
so ranks never wait on each other, and the trial reads the checkpoint once in total, split across its ranks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# transformers' qwen2_moe conversion (shared by qwen3_moe, mixtral-style hub layouts of the family): the experts'
# per-expert 2-D weights become two 3-D parameters. The order of `parts` is the order of concatenation.
FUSED_EXPERTS = {
    "gate_up_proj": ("gate_proj.weight", "up_proj.weight"),
    "down_proj": ("down_proj.weight",),
}


@dataclass(frozen=True)
class Block:
    """One checkpoint tensor, seen as `rows` rows of `cols` elements (a 1-D tensor: rows of one element)."""

    name: str
    rows: int
    cols: int

    @property
    def numel(self) -> int:
        return self.rows * self.cols


class CheckpointIndex:
    """Which safetensors file holds each tensor, and each tensor's shape (headers only, no weights read)."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            files = json.loads(index.read_text())["weight_map"]
        elif (self.path / "model.safetensors").exists():
            with safe_open(self.path / "model.safetensors", "pt") as f:
                files = dict.fromkeys(f.keys(), "model.safetensors")
        else:
            raise FileNotFoundError(f"{self.path} holds no model.safetensors nor model.safetensors.index.json: "
                                    "point model.path at a Hugging Face checkpoint folder in safetensors format")
        self.file_of: dict[str, str] = files
        self.shape_of: dict[str, tuple[int, ...]] = {}
        for file in sorted(set(files.values())):
            with safe_open(self.path / file, "pt") as f:
                for name in f.keys():
                    if files.get(name) == file:  # the index is authoritative
                        self.shape_of[name] = tuple(f.get_slice(name).get_shape())
        absent = sorted(set(files) - set(self.shape_of))
        if absent:
            raise ValueError(f"{self.path}: the index names {len(absent)} tensors its files lack (e.g. {absent[:3]}): "
                             "the checkpoint is incomplete; copy it again")

    def block(self, name: str) -> Block:
        shape = self.shape_of[name]
        if len(shape) <= 1:
            return Block(name, shape[0] if shape else 1, 1)
        cols = 1
        for d in shape[1:]:
            cols *= d
        return Block(name, shape[0], cols)


def sources(name: str, shape: tuple[int, ...], ckpt: CheckpointIndex) -> list[Block] | None:
    """The checkpoint tensors whose flattened concatenation is parameter `name` of `shape`; None: not found."""
    if name in ckpt.shape_of:
        return [ckpt.block(name)]
    prefix, _, leaf = name.rpartition(".")
    parts = FUSED_EXPERTS.get(leaf)
    names = [f"{prefix}.{e}.{part}" for e in range(shape[0]) for part in parts] if parts else []
    if not names or any(n not in ckpt.shape_of for n in names):
        return None
    return [ckpt.block(n) for n in names]


def read_flat(ckpt: CheckpointIndex, blocks: list[Block], start: int, end: int,
              out: Callable[[int, Any], None]) -> None:
    """Elements [start, end) of the blocks' flattened concatenation, handed to `out(offset, tensor)` one block
    piece at a time (offset relative to `start`); each file is open only while its piece is read, so the pages
    it maps never add up beyond one piece."""
    from safetensors import safe_open

    offset = 0
    for block in blocks:
        lo, hi = max(start, offset), min(end, offset + block.numel)
        if lo < hi:
            r0, r1 = (lo - offset) // block.cols, -(-(hi - offset) // block.cols)
            with safe_open(ckpt.path / ckpt.file_of[block.name], "pt") as f:
                rows = f.get_slice(block.name)[r0:r1]
            flat = rows.reshape(-1)[lo - offset - r0 * block.cols:hi - offset - r0 * block.cols]
            out(lo - start, flat)
            del rows, flat
        offset += block.numel
        if offset >= end:
            break


def plan_sources(model: Any, ckpt: CheckpointIndex) -> list[tuple[Any, str, list[Block]]]:
    """(parameter, name, blocks) for every distinct parameter (a tied weight once, under whichever of its names the
    checkpoint holds); refuses, before any weight is read, missing tensors and mismatched sizes."""
    aliases: dict[int, list[tuple[str, Any]]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append((name, p))
    plan, missing = [], []
    for names in aliases.values():
        p = names[0][1]
        shape = tuple(getattr(p, "ds_shape", p.shape))
        found = next(((n, b) for n, _ in names if (b := sources(n, shape, ckpt)) is not None), None)
        if found is None:
            missing.append(" = ".join(n for n, _ in names))
            continue
        name, blocks = found
        # one tensor: the parameter's shape; fused experts: each part one slice of the concatenated dimension
        want = shape if len(blocks) == 1 else (shape[1] * shape[0] // len(blocks), *shape[2:])
        wrong = [b.name for b in blocks if ckpt.shape_of[b.name] != tuple(want)]
        if wrong:
            raise ValueError(f"{ckpt.path}: parameter {name} of shape {list(shape)} needs checkpoint tensors of shape "
                             f"{list(want)}, but {wrong[0]} has {list(ckpt.shape_of[wrong[0]])} ({len(wrong)} such): "
                             "the checkpoint does not match its config.json")
        plan.append((p, name, blocks))
    if missing:
        raise ValueError(f"{ckpt.path} lacks tensors for {len(missing)} parameters (e.g. {missing[:3]}): the "
                         "checkpoint does not match its config.json, or its layout is not one "
                         "workers/train/load.py maps")
    return plan


def partition(p: Any) -> tuple[Any, int, int]:
    """This rank's ZeRO-3 partition of `p`: (1-D tensor, first element, element count within the parameter)."""
    import deepspeed.comm as dist
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    if p.ds_status != ZeroParamStatus.NOT_AVAILABLE:
        raise RuntimeError(f"parameter {p.ds_id} is gathered while loading: load before deepspeed.initialize")
    if getattr(p.ds_tensor, "final_location", None) is not None or hasattr(p.ds_tensor, "ds_quant_scale"):
        raise NotImplementedError("workers/train/load.py writes partitions in memory: ZeRO-3 NVMe parameter "
                                  "offload and quantized weights are not supported; drop offload_param / "
                                  "zero_quantized_weights")
    rank = getattr(p, "ds_zero_partition_rank", None)
    if rank is None:
        rank = dist.get_rank(group=p.ds_process_group)
    return _span(p.ds_tensor, rank, p.ds_numel)


def secondary_partition(p: Any) -> tuple[Any, int, int] | None:
    """This rank's hpZ (ZeRO++ zero_hpz_partition_size > 1) secondary partition of `p`, or None without hpZ.

    DeepSpeed 0.19 (partition_parameters.py `_partition_param_sec`) keeps a second copy of every parameter sharded
    over the rank's hpZ group: size aligned_numel / group size, starting at rank-in-group x that size. Every fetch
    all-gathers from this copy when it exists, and only trainable parameters get it refreshed (stage3.py), so a
    frozen base whose secondary copy is not loaded computes with the construction-time (uninitialized) bytes."""
    import deepspeed.comm as dist

    secondary = getattr(p, "ds_secondary_tensor", None)
    if secondary is None:
        return None
    if hasattr(secondary, "ds_quant_scale") or getattr(secondary, "final_location", None) is not None:
        raise NotImplementedError("workers/train/load.py writes hpZ secondary partitions in memory: quantized or "
                                  "offloaded secondary weights are not supported")
    return _span(secondary, dist.get_rank(group=p.ds_zero_param_process_group), p.ds_numel)


def _span(part: Any, rank: int, numel: int) -> tuple[Any, int, int]:
    """(partition tensor, its first element in the flat parameter, its element count there) for `rank`."""
    n = part.ds_numel
    start = rank * n
    return part, start, max(0, min(n, numel - start))


def load_partitions(model: Any, path: str | Path, log: Callable[[str], None] = print) -> dict[str, int]:
    """Fill every ZeRO-3 partition of `model` (built under zero.Init) from the checkpoint at `path`, each rank its
    own; persistent buffers the checkpoint holds are copied whole. Returns counts for the log."""
    import torch

    ckpt = CheckpointIndex(path)
    plan = plan_sources(model, ckpt)
    used = {b.name for _, _, blocks in plan for b in blocks}
    read = 0
    with torch.no_grad():
        for p, _, blocks in plan:
            for part, start, count in filter(None, (partition(p), secondary_partition(p))):
                if count < part.numel():
                    part[count:].zero_()  # the last rank's padding
                if count == 0:
                    continue

                def put(offset: int, piece: Any, part: Any = part) -> None:
                    part.narrow(0, offset, piece.numel()).copy_(piece)

                read_flat(ckpt, blocks, start, start + count, put)
                read += count * part.element_size()
        for name, buf in model.named_buffers():
            if name in ckpt.shape_of:
                read_flat(ckpt, [ckpt.block(name)], 0, buf.numel(),
                          lambda offset, piece, buf=buf: buf.view(-1).narrow(0, offset, piece.numel()).copy_(piece))
                used.add(name)
    unused = sorted(set(ckpt.shape_of) - used)
    if unused:
        log(f"[load] {len(unused)} checkpoint tensors not used (e.g. {unused[:3]})")
    log(f"[load] {len(plan)} parameters from {len(set(ckpt.file_of.values()))} files, "
        f"{read / 2**20:.0f} MiB read by this rank")
    return {"parameters": len(plan), "bytes_read": read, "unused": len(unused)}


def restore_rotary_buffers(model: Any) -> int:
    """Recompute the rotary embeddings' inverse frequencies in float32, as a load without ZeRO-3 has them:
    zero.Init casts every floating tensor created inside it to the model dtype, and bf16 frequencies shift
    each position's angle (by ~0.2 rad at position 1000 for the fastest one) away from what vLLM serves with.
    The same computation as transformers' own `_init_weights` for rotary modules; returns how many."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    count = 0
    for module in model.modules():
        if "RotaryEmbedding" not in type(module).__name__ or not hasattr(module, "original_inv_freq"):
            continue
        rope_fn = {"default": getattr(module, "compute_default_rope_parameters", None), **ROPE_INIT_FUNCTIONS}
        value, _ = rope_fn[module.rope_type](module.config)
        module.inv_freq = value.to(module.inv_freq.device)
        module.original_inv_freq = value.clone().to(module.inv_freq.device)
        count += 1
    return count


@contextmanager
def _zero3_construction(ds_config: dict[str, Any], dtype: Any) -> Iterator[None]:
    """zero.Init with transformers' own ZeRO-3 flags, and its random init skipped (every weight is loaded)."""
    import torch
    from transformers import initialization, modeling_utils

    # zero.Init casts parameters to the dtype its config enables (an explicit `dtype=` is ignored on accelerators
    # without fp16, CPU included: DeepSpeed 0.19's `dtype or float16 if ... else ...`), so the config decides
    enabled = {key: ds_config.get(key, {}).get("enabled", False) for key in ("bf16", "fp16")}
    built = torch.bfloat16 if enabled["bf16"] else torch.float16 if enabled["fp16"] else torch.float32
    if built != dtype:
        raise ValueError(f"the DeepSpeed config builds the model in {built} but the model dtype is {dtype}: "
                         "enable bf16 (or fp16) in the DeepSpeed config to match it")
    with initialization.no_init_weights(), _init_without_broadcast()(config_dict_or_path=ds_config), \
            modeling_utils.set_zero3_state():
        yield


def _init_without_broadcast() -> type:
    """deepspeed.zero.Init minus its broadcast of each new parameter from rank 0, which only makes random init
    agree across ranks: here every value is then read from the checkpoint, so the broadcast would move the whole
    model's bytes (470 GB at 235B) for nothing, and on gloo it leaves the receiving ranks holding buffers."""
    import deepspeed

    class Init(deepspeed.zero.Init):
        def _zero_init_param(self, param: Any) -> None:  # DeepSpeed 0.19: convert, broadcast, partition
            self._convert_to_deepspeed_param(param)
            param.partition()

    return Init if hasattr(deepspeed.zero.Init, "_zero_init_param") else deepspeed.zero.Init


def load_zero3(path: str | Path, dtype: Any, ds_config: dict[str, Any], log: Callable[[str], None] = print) -> Any:
    """The causal LM at `path`, partitioned over the ZeRO-3 group as it is built, then filled from the
    checkpoint rank by rank. transformers and PEFT see ZeRO-3 through the `HfDeepSpeedConfig` the caller keeps
    alive (workers/train/trainer.py build_model)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with _zero3_construction(ds_config, dtype):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # as transformers' own ZeRO-3 from_config does: a tied checkpoint holds one of the two
    restore_rotary_buffers(model)
    load_partitions(model, path, log)
    model.eval()  # as from_pretrained returns it
    return model

