"""Packed LoRA: K trials of one setting share one forward/backward over the frozen base.

Every targeted nn.Linear becomes a `PackedLoraLinear` that holds K (A, B) pairs, one per trial ("slot"). A packed
micro-batch holds the same number of sequences for each active slot, slot by slot; the layer runs the base weight
once over all of them (under ZeRO-3: one all-gather per step for the K trials) and adds each slot's low-rank update
to its own rows with two batched matmuls. The LM head (LoRA on lm_head) sees only the answer tokens, whose number
differs between slots: there each token carries its slot's index and each slot's update is computed on its own
tokens (`token_slots`). Each slot's A and B are their own parameters (so each trial has its own
Adam state and LR, as its own optimizer param group) registered directly on the layer, so ZeRO-3's module hooks
gather them with the layer.

The loss is the sum over slots of each trial's own answer-token loss divided by its own token count, so a slot's
gradient is exactly what that trial alone would get: no term of the loss mixes two slots. A's initial values come
from (seed, module name) alone (`lora_a_init`), the same in a pack and in an unpacked PEFT trial, which is what
makes a packed trial's adapter equal the alone run's. Adapters are saved per slot in PEFT's format (the keys and
adapter_config.json that `PeftModel.save_pretrained` writes), so vLLM serves them as before.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

PEFT_PREFIX = "base_model.model."  # PEFT's key prefix in a saved adapter


def lora_a_init(module_name: str, seed: int, rank: int, in_features: int) -> torch.Tensor:
    """A's initial value [rank, in_features] for one trial and module: PEFT's default distribution
    (kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), drawn from a generator seeded by
    (seed, module name) only, so it does not depend on how many trials share the model or what was built before."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(module_name.encode()))
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(rank, in_features, generator=gen, dtype=torch.float64) * 2 - 1).mul_(bound).float()


def seed_peft_lora(peft_model: Any, seed: int) -> None:
    """Give an unpacked PEFT model the same initial A as a packed slot of this seed (B starts at zero in both)."""
    import deepspeed

    prefix, suffix = PEFT_PREFIX, ".lora_A.default.weight"
    for name, p in peft_model.named_parameters():
        if name.endswith(suffix) and p.dim() == 2:
            with deepspeed.zero.GatheredParameters([p], modifier_rank=0, enabled=hasattr(p, "ds_id")):
                value = lora_a_init(name.removeprefix(prefix).removesuffix(suffix), seed, p.shape[0], p.shape[1])
                with torch.no_grad():
                    p.copy_(value.to(p.dtype))


@dataclass
class Route:
    """Which slots the current micro-batch holds, in row order (each slot the same number of rows)."""

    slots: list[int] = field(default_factory=list)
    last_losses: torch.Tensor | None = None  # the last forward's loss per slot in `slots` (detached)


class PackedLoraLinear(torch.nn.Module):
    """base(x) + scaling * B_s A_s x for the rows x of slot s: every slot in one pair of batched matmuls where rows
    come slot by slot in equal numbers, slot by slot on its own rows where each row names its slot (the LM head)."""

    def __init__(self, base: torch.nn.Linear, name: str, seeds: list[int], rank: int, alpha: float,
                 route: Route) -> None:
        super().__init__()
        self.base, self.name, self.route, self.k = base, name, route, len(seeds)
        self.scaling = alpha / rank
        dtype = base.weight.dtype
        out_features, in_features = _linear_shape(base)
        for slot, seed in enumerate(seeds):
            a = lora_a_init(name, seed, rank, in_features).to(dtype)
            self.register_parameter(f"lora_A_{slot}", torch.nn.Parameter(a))
            self.register_parameter(f"lora_B_{slot}", torch.nn.Parameter(torch.zeros(out_features, rank, dtype=dtype)))

    def slot_params(self, slot: int) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        return getattr(self, f"lora_A_{slot}"), getattr(self, f"lora_B_{slot}")

    def forward(self, x: torch.Tensor, token_slots: torch.Tensor | None = None) -> torch.Tensor:
        """x's rows grouped by slot, equally many per slot in route order (the decoder's layers); or, with
        `token_slots` (one int per row of x: its slot's position in route.slots), any rows in any order (the LM head
        on the answer tokens, which differ in number between slots)."""
        y = self.base(x)
        if token_slots is not None:
            return self._add_routed(y, x, token_slots)
        slots = self.route.slots
        a = torch.stack([self.slot_params(s)[0] for s in slots])  # [n, r, in]
        b = torch.stack([self.slot_params(s)[1] for s in slots])  # [n, out, r]
        xs = x.reshape(len(slots), -1, x.shape[-1]).to(a.dtype)  # rows grouped by slot: [n, rows*T, in]
        delta = torch.bmm(torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2)) * self.scaling
        return y + delta.reshape(y.shape).to(y.dtype)

    def _add_routed(self, y: torch.Tensor, x: torch.Tensor, token_slots: torch.Tensor) -> torch.Tensor:
        """y plus each row's update from its own slot's (A, B), slot by slot on that slot's rows only.

        Every slot of the route runs, on no rows too, so each call uses every active A and B: under ZeRO-3 every
        rank then reduces the same gradients whatever its tokens (an empty chunk gives zeros). Rows are gathered per
        slot rather than masked after a shared matmul, so no value of one slot (a diverged member's inf) reaches
        another slot's rows, and nothing of size [rows, r, in] or K x [rows, out] is built. The updates go into one
        copy of y (for the head: logits-sized): not into y itself, which under ZeRO-3 is the view a DeepSpeed
        autograd Function returns, and autograd refuses in-place changes to those."""
        rows, token_slots = x.reshape(-1, x.shape[-1]), token_slots.reshape(-1)
        out = y.reshape(-1, y.shape[-1]).clone()
        for position, slot in enumerate(self.route.slots):
            a, b = self.slot_params(slot)
            index = (token_slots == position).nonzero().squeeze(1)
            mine = rows.index_select(0, index).to(a.dtype)
            out.index_add_(0, index, ((mine @ a.t()) @ b.t() * self.scaling).to(out.dtype))
        return out.view(y.shape)


def _linear_shape(linear: torch.nn.Linear) -> tuple[int, int]:
    """(out, in) even when ZeRO-3 has partitioned the weight (its local tensor is then empty)."""
    shape = getattr(linear.weight, "ds_shape", None) or linear.weight.shape
    return int(shape[0]), int(shape[1])


def install_packed_lora(model: torch.nn.Module, targets: list[str], seeds: list[int], rank: int, alpha: float,
                        ) -> tuple[Route, list[PackedLoraLinear]]:
    """Freeze the base and wrap every nn.Linear whose name ends in a target with a PackedLoraLinear."""
    for p in model.parameters():
        p.requires_grad_(False)
    route, layers = Route(), []
    found = [(n, m) for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in targets]
    for name, linear in found:
        parent_name, _, child = name.rpartition(".")
        layer = PackedLoraLinear(linear, name, seeds, rank, alpha, route)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        layers.append(layer)
    if not layers:
        raise ValueError(f"no nn.Linear named {targets} in the model: check model.lora_target_modules")
    return route, layers


def slot_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
              slots: torch.Tensor, n: int) -> torch.Tensor:
    """[n] summed, weighted cross-entropy of each slot's tokens (slots: each token's position in the route). A
    packed head (LoRA on lm_head) routes each token through its own slot's adapter."""
    logits = head(hidden, token_slots=slots) if isinstance(head, PackedLoraLinear) else head(hidden)
    ce = F.cross_entropy(logits.float(), targets, reduction="none") * weights
    return torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, slots, ce)


def install_packed_loss(model: torch.nn.Module, route: Route, chunk_tokens: int) -> None:
    """Make `model(input_ids, attention_mask, labels, num_items, num_chunks)` return the sum over the micro-batch's
    slots of each slot's answer-token loss divided by its own num_items ([n] per slot, in route order); the LM head
    runs `num_chunks` times as in workers/train/loss.py, so every rank issues the same ZeRO-3 gathers."""
    from workers.train.loss import answer_positions, loss_chunks

    decoder, head = model.get_decoder(), model.get_output_embeddings()

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                num_items: torch.Tensor, num_chunks: int | None = None) -> torch.Tensor:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        rows, cols, targets = answer_positions(labels)
        n = len(route.slots)
        slot_of_row = torch.arange(n, device=rows.device).repeat_interleave(labels.shape[0] // n)
        slots = slot_of_row[rows]
        weights = (1.0 / num_items.to(hidden.device, torch.float32))[slots]
        h = hidden[rows, cols]
        num_chunks = num_chunks or loss_chunks(len(targets), chunk_tokens)
        if num_chunks == 1:
            per_slot = slot_loss(head, h, targets, weights, slots, n)
        else:
            per_slot = h[:0].float().sum().expand(n).clone()
            for start in range(0, num_chunks * chunk_tokens, chunk_tokens):
                part = slice(start, start + chunk_tokens)
                per_slot = per_slot + checkpoint(slot_loss, head, h[part], targets[part], weights[part], slots[part],
                                                 n, use_reentrant=False)
        route.last_losses = per_slot.detach()
        return per_slot.sum()

    model.forward = forward  # an instance attribute: nn.Module.__call__ (and DeepSpeed's hooks) call it


def slot_state(layers: list[Any], slot: int, dtype: str) -> dict[str, torch.Tensor]:
    """One slot's LoRA tensors, whole (gathered from ZeRO-3 shards), on CPU, under PEFT's saved key names.
    Collective: every rank must call it."""
    import deepspeed

    state = {}
    for layer in layers:
        a, b = layer.slot_params(slot)
        with deepspeed.zero.GatheredParameters([a, b], modifier_rank=None, enabled=hasattr(a, "ds_id")):
            for part, p in (("lora_A", a), ("lora_B", b)):
                key = f"{PEFT_PREFIX}{layer.name}.{part}.weight"
                state[key] = p.detach().to("cpu", dtype=getattr(torch, dtype), copy=True)
    return state


def write_peft_adapter(state: dict[str, torch.Tensor], out_dir: Path, model_path: str, targets: list[str],
                       rank: int, alpha: int, target_parameters: list[str] | None = None) -> Path:
    """An adapter folder as PeftModel.save_pretrained writes it (adapter_config.json + adapter_model.safetensors),
    renamed into place atomically."""
    import shutil

    from peft import LoraConfig
    from safetensors.torch import save_file

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets),
                        task_type="CAUSAL_LM", base_model_name_or_path=model_path, inference_mode=True,
                        target_parameters=list(target_parameters or []) or None)  # expert LoRA: packed_experts.py
    config.save_pretrained(str(tmp))
    save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


OnSlot = Callable[[int], None]
