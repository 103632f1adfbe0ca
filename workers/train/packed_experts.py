"""Packed LoRA on MoE experts' 3-D weights: K trials share one pass over the frozen experts (workers/train/packed.py's
counterpart of PEFT's `target_parameters`).

Unpacked, PEFT's ParamWrapper adapts a fused expert weight W [E, out, in] (transformers v5 Qwen3-MoE:
`mlp.experts.gate_up_proj` [E, 2I, H], `mlp.experts.down_proj` [E, H, I]) by folding W + s * B_e A_e into it for the
whole forward, with lora_A [r*E, in] (rows e*r .. e*r+r-1 are expert e's A_e) and lora_B [out, r*E] (columns
j*E + e, j < r, are expert e's B_e: PEFT reshapes B to [out, r, E]), s = alpha / r. In a pack each slot (trial) has
its own delta, so here the experts module is replaced by `PackedLoraExperts`: it runs the base experts once over all
slots' tokens (grouped matmuls, as transformers' grouped_mm experts forward) and adds, for each routed (token,
expert) pair, its own slot's s * (x A_e^T) B_e^T to the gate/up projection before the activation and to the down
projection after it. That equals x (W_e + s B_e A_e)^T, the alone run's product, without folding K copies of the
expert stack: the pairs are sorted by (expert, slot), so one grouped matmul per factor covers every slot.

Each slot's A and B are parameters named and shaped as PEFT's, and A starts from `lora_a_init(PEFT module name,
seed, r*E, in)`, which is what `seed_peft_lora` gives an unpacked trial (PEFT's kaiming-uniform over lora_A's fan-in,
`in`), so a packed member's expert adapter equals its alone run's and saves under PEFT's keys. PEFT nests one
ParamWrapper per targeted parameter of a module, in the order the module registers them, the last outermost: with
both targeted, gate_up_proj's adapter is `...mlp.experts.base_layer.lora_A` and down_proj's `...mlp.experts.lora_A`.
"""

from __future__ import annotations

import torch

from workers.train.packed import Route, lora_a_init


class ExpertSlots(torch.nn.Module):
    """K slots of PEFT's ParamWrapper LoRA for one fused expert weight [E, out, in]: lora_A_<k> [r*E, in] and
    lora_B_<k> [out, r*E], named by `name` (PEFT's module name, the key prefix of its saved adapter)."""

    def __init__(self, name: str, seeds: list[int], rank: int, experts: int, out_features: int, in_features: int,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.name, self.rank, self.experts = name, rank, experts
        for slot, seed in enumerate(seeds):
            a = lora_a_init(name, seed, rank * experts, in_features).to(dtype)
            self.register_parameter(f"lora_A_{slot}", torch.nn.Parameter(a))
            b = torch.zeros(out_features, rank * experts, dtype=dtype)
            self.register_parameter(f"lora_B_{slot}", torch.nn.Parameter(b))

    def slot_params(self, slot: int) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        return getattr(self, f"lora_A_{slot}"), getattr(self, f"lora_B_{slot}")

    def grouped_factors(self, slots: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A^T [E*n, in, r], B^T [E*n, r, out]) for group g = e*n + i: expert e of the i-th slot in `slots`."""
        e, r = self.experts, self.rank
        a = torch.stack([self.slot_params(s)[0].reshape(e, r, -1) for s in slots], dim=1)  # [E, n, r, in]
        # PEFT's B column j*E + e is expert e's j-th: [out, r, E] -> [E, out, r]
        b = torch.stack([self.slot_params(s)[1].reshape(-1, r, e).permute(2, 0, 1) for s in slots], dim=1)
        return a.flatten(0, 1).transpose(1, 2), b.flatten(0, 1).transpose(1, 2)


class PackedLoraExperts(torch.nn.Module):
    """A fused-experts module (forward(hidden [N, H], top_k_index [N, k], top_k_weights [N, k])) whose rows, grouped
    by slot in equal counts (`route.slots` order), each go through their own slot's LoRA on the targeted weights."""

    def __init__(self, base: torch.nn.Module, lora: dict[str, ExpertSlots], scaling: float, route: Route) -> None:
        super().__init__()
        self.base, self.route, self.scaling = base, route, scaling
        self.lora = torch.nn.ModuleDict(lora)  # parameter name ("gate_up_proj", "down_proj") -> its slots

    def _project(self, which: str, x: torch.Tensor, expert_offsets: torch.Tensor, group_offsets: torch.Tensor,
                 ) -> torch.Tensor:
        y = _grouped(x, getattr(self.base, which).transpose(-2, -1), expert_offsets)
        if which not in self.lora:
            return y
        a_t, b_t = self.lora[which].grouped_factors(self.route.slots)
        low = _grouped(x, a_t.to(x.dtype), group_offsets)
        return y + _grouped(low, b_t.to(x.dtype), group_offsets) * self.scaling

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
                ) -> torch.Tensor:
        n, experts = len(self.route.slots), self.base.num_experts
        tokens, top_k = top_k_index.shape
        if n == 0 or tokens % n:
            raise RuntimeError(f"{tokens} tokens do not split into {n} slots: set route.slots before the forward")
        slot_of_pair = (torch.arange(tokens, device=hidden_states.device) // (tokens // n)).repeat_interleave(top_k)
        expert_of_pair = top_k_index.reshape(-1)
        # sorted by (expert, slot): contiguous per expert for the base weight, per (expert, slot) for the LoRA
        group_of_pair = expert_of_pair * n + slot_of_pair
        group_sorted, perm = torch.sort(group_of_pair, stable=True)
        x = hidden_states[perm // top_k]
        per_group = torch.bincount(group_sorted, minlength=experts * n)
        group_offsets = torch.cumsum(per_group, 0, dtype=torch.int32)
        expert_offsets = torch.cumsum(per_group.reshape(experts, n).sum(1), 0, dtype=torch.int32)
        h = self.base._apply_gate(self._project("gate_up_proj", x, expert_offsets, group_offsets))
        out = self._project("down_proj", h, expert_offsets, group_offsets)
        out = out * top_k_weights.reshape(-1)[perm].unsqueeze(-1)
        unsort = torch.empty_like(perm)
        unsort[perm] = torch.arange(perm.numel(), device=perm.device)
        return out[unsort].view(tokens, top_k, -1).sum(dim=1).to(hidden_states.dtype)


def _grouped(x: torch.Tensor, w_t: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x[rows of group g] @ w_t[g] ([S, in] @ [G, in, out]): transformers' grouped matmul (as its experts use), or,
    where a side of w_t is not a multiple of 16 bytes (a LoRA rank under 8 in bf16), which torch's grouped_mm refuses
    ("strides should be multiple of 16 bytes", on CPU too), transformers' per-group loop."""
    from transformers.integrations.moe import _grouped_mm

    if any(d * w_t.element_size() % 16 for d in w_t.shape[1:]):
        return torch.ops.transformers.grouped_mm_fallback(x.to(w_t.dtype), w_t, offsets)
    return _grouped_mm(x, w_t, offs=offsets)


def _expert_shape(param: torch.Tensor) -> tuple[int, int, int]:
    """(E, out, in) even when ZeRO-3 has partitioned the weight (its local tensor is then empty)."""
    shape = getattr(param, "ds_shape", None) or param.shape
    return int(shape[0]), int(shape[1]), int(shape[2])


def _check_layout(name: str, module: torch.nn.Module) -> None:
    """The layout PackedLoraExperts computes: Qwen3-MoE's (gate and up fused, [E, out, in], no bias)."""
    layout = {"has_gate": True, "has_bias": False, "is_transposed": False}
    wrong = {k: getattr(module, k, None) for k, v in layout.items() if getattr(module, k, None) != v}
    if wrong or not hasattr(module, "num_experts"):
        raise ValueError(f"{name} ({type(module).__name__}) is not a fused gate/up experts module of the layout "
                         f"packed expert LoRA takes ({layout}; it has {wrong}): set sweep.pack=1 to train it alone")


def install_packed_experts(model: torch.nn.Module, targets: list[str], seeds: list[int], rank: int, alpha: float,
                           route: Route) -> list[ExpertSlots]:
    """Wrap every experts module holding a parameter named like a target (PEFT's target_parameters matching:
    `<module>.<param>` equals or ends in `.<target>`) in a PackedLoraExperts; returns the slots of every wrapped
    weight, in the form packed.py's PackedLoraLinear layers take (name, slot_params) for optimizer groups and saving.
    Call after install_packed_lora (which freezes the base)."""
    found = []
    for name, module in model.named_modules():
        params = [p for p, _ in module.named_parameters(recurse=False)
                  if any(f"{name}.{p}" == t or f"{name}.{p}".endswith(f".{t}") for t in targets)]
        if params:
            found.append((name, module, params))
    if not found:
        raise ValueError(f"no parameter named {targets} in the model: check model.lora_expert_parameters")
    slots = []
    for name, module, params in found:
        _check_layout(name, module)
        unknown = set(params) - {"gate_up_proj", "down_proj"}
        if unknown:
            raise ValueError(f"packed expert LoRA takes gate_up_proj and down_proj, not {sorted(unknown)} of {name}: "
                             "set sweep.pack=1 to train it alone")
        lora = {}
        for i, param_name in enumerate(params):  # PEFT's nesting: the last targeted parameter is the outermost
            experts, out_features, in_features = _expert_shape(getattr(module, param_name))
            peft_name = name + ".base_layer" * (len(params) - 1 - i)
            dtype = getattr(module, param_name).dtype
            lora[param_name] = ExpertSlots(peft_name, seeds, rank, experts, out_features, in_features, dtype)
        parent_name, _, child = name.rpartition(".")
        wrapper = PackedLoraExperts(module, lora, alpha / rank, route)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapper)
        slots.extend(lora.values())
    return slots

