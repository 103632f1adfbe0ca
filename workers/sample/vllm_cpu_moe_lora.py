"""Fused-MoE experts with LoRA for vLLM's CPU backend: a torch computation in place of the Triton kernel.

With LoRA enabled vLLM always picks its Triton experts for an unquantized MoE (the oracle's LoRA branch,
`vllm.model_executor.layers.fused_moe.oracle.unquantized.select_unquantized_moe_backend`), because only
Triton experts read the LoRA context (`LoRAExpertsMixin`). The CPU build has no Triton backend, so the first
MoE forward fails in `TritonExperts.apply` ("triton.language has no attribute bfloat16"). Everything before
it works on CPU: routing, the LoRA manager stacking each adapter's expert factors per slot, the modular
kernel's prepare and finalize. So this module replaces only `TritonExperts.apply`, in the engine's processes
on CPU, by `apply` below: for each expert its tokens, the base MLP with each token's adapter added,

    h = x W13[e]^T + sum_j (x A13_j[s, e]^T) B13_j[s, e]^T    (j: gate and up slices, or one fused slice)
    y = act(h) W2[e]^T + (act(h) A2[s, e]^T) B2[s, e]^T

with s the token's adapter slot (-1: no adapter, no delta) and the LoRA scale already folded into B by
vLLM when it loaded the adapter; y is weighted by the router and summed over the token's top-k experts.
Accumulation is in float32, one matmul per (expert, adapter) group of tokens.

workers/sample/vllm_cpu_lora.py's plugin hook installs it; `mismatch()` keeps a vLLM whose experts or LoRA context
differ from 0.32's on its own code (which then fails as before, with the reason printed).
"""

from __future__ import annotations

import inspect
from typing import Any

# What this module was written against: the vLLM releases, the parameters TritonExperts.apply takes (vLLM
# calls it by keyword and position), and the LoRA-context fields read below.
VLLM_VERSIONS = ("0.32.",)
APPLY_PARAMS = ["self", "output", "hidden_states", "w1", "w2", "topk_weights", "topk_ids", "activation",
                "global_num_experts", "expert_map", "a1q_scale", "a2_scale", "workspace13", "workspace2",
                "expert_tokens_meta", "apply_router_weight_on_input"]
CONTEXT_FIELDS = {"w13_lora_a_stacked", "w13_lora_b_stacked", "w2_lora_a_stacked", "w2_lora_b_stacked",
                  "punica_wrapper", "local_token_lora_mapping", "fully_sharded", "enable_moe_shared_loras"}


def _expert(stacked: Any, slot: int, expert: int) -> Any:
    """One adapter slot's factor for one expert; shared factors (expert dim 1) serve every expert."""
    return stacked[slot, 0 if stacked.shape[1] == 1 else expert]


def _token_slots(ctx: Any, num_tokens: int) -> Any:
    """Each token's adapter slot (-1: none), as vLLM's LoRA layers see them for this forward."""
    import torch

    if ctx is None:
        return torch.full((num_tokens,), -1, dtype=torch.long)
    slots = ctx.local_token_lora_mapping
    if slots is None:
        slots = ctx.punica_wrapper.token_lora_indices
    if slots.numel() < num_tokens:
        raise RuntimeError(f"LoRA mapping covers {slots.numel()} tokens, the MoE layer got {num_tokens}")
    return slots[:num_tokens].long()


def experts_with_lora(x: Any, w1: Any, w2: Any, topk_weights: Any, topk_ids: Any, ctx: Any,
                      act: Any, expert_map: Any = None, weight_on_input: bool = False,
                      b1: Any = None, b2: Any = None) -> Any:
    """sum_k weight[t, k] * expert_{topk_ids[t, k]}(x[t]) with each token's adapter, in float32: [tokens, hidden].

    w1: [E, N, K] (gate rows then up rows), w2: [E, K, N/2]; `act` maps h [n, N] to [n, N/2];
    expert_map: global -> local expert (-1: on another rank), None: all local."""
    import torch

    if ctx is not None and ctx.fully_sharded:
        raise NotImplementedError("fully_sharded_loras: the CPU MoE LoRA path needs every LoRA rank locally")
    x32 = x.float()
    out = torch.zeros(x.shape[0], w2.shape[1], dtype=torch.float32, device=x.device)
    slots = _token_slots(ctx, x.shape[0])
    for e in torch.unique(topk_ids).tolist():
        local = int(expert_map[e]) if expert_map is not None else e
        if local < 0:
            continue  # another rank's expert
        tok, k = torch.nonzero(topk_ids == e, as_tuple=True)
        xe = x32[tok]
        h = xe @ w1[local].float().T
        if b1 is not None:
            h += b1[local].float()
        groups = [(s, slots[tok] == s) for s in torch.unique(slots[tok]).tolist() if s >= 0] if ctx else []
        for s, rows in groups:
            xs, at = xe[rows], 0
            for a, b in zip(ctx.w13_lora_a_stacked, ctx.w13_lora_b_stacked, strict=True):
                bb = _expert(b, s, local).float()
                h[rows, at:at + bb.shape[0]] += (xs @ _expert(a, s, local).float().T) @ bb.T
                at += bb.shape[0]
        m = act(h)
        y = m @ w2[local].float().T
        if b2 is not None:
            y += b2[local].float()
        for s, rows in groups:
            a, b = ctx.w2_lora_a_stacked[0], ctx.w2_lora_b_stacked[0]
            y[rows] += (m[rows] @ _expert(a, s, local).float().T) @ _expert(b, s, local).float().T
        if not weight_on_input:
            y *= topk_weights[tok, k].float().unsqueeze(1)
        out.index_add_(0, tok, y)
    return out


def apply(self: Any, output: Any, hidden_states: Any, w1: Any, w2: Any, topk_weights: Any, topk_ids: Any,
          activation: Any, global_num_experts: int, expert_map: Any, a1q_scale: Any, a2_scale: Any,
          workspace13: Any, workspace2: Any, expert_tokens_meta: Any, apply_router_weight_on_input: bool) -> None:
    """TritonExperts.apply's contract (write the finished, router-weighted sum into `output`), in torch."""
    import torch
    from vllm.model_executor.layers.fused_moe.activation import MoEActivation

    if self.quant_dtype is not None or a1q_scale is not None:
        raise NotImplementedError("the CPU MoE LoRA path serves unquantized experts only")

    def act(h: Any) -> Any:
        if activation == MoEActivation.SILU and self.activation_config.clamp_limit is None:
            half = h.shape[1] // 2
            return torch.nn.functional.silu(h[:, :half]) * h[:, half:]
        m = torch.empty(h.shape[0], self.adjust_N_for_activation(h.shape[1], activation), dtype=h.dtype)
        self.activation(activation, m, h)  # vLLM's own activation for the others
        return m

    ctx = self._lora_context
    x = ctx.original_hidden_states if ctx is not None and ctx.original_hidden_states is not None else hidden_states
    out = experts_with_lora(x, w1, w2, topk_weights, topk_ids, ctx, act, expert_map, apply_router_weight_on_input,
                            self.w1_bias, self.w2_bias)
    output.copy_(out.to(output.dtype))


def mismatch() -> str | None:
    """Why this vLLM's Triton experts cannot be replaced by `apply`, or None."""
    import dataclasses

    import vllm
    from vllm.model_executor.layers.fused_moe.experts.lora_context import MoELoRAContext
    from vllm.model_executor.layers.fused_moe.experts.triton_moe import TritonExperts

    if not vllm.__version__.startswith(VLLM_VERSIONS):
        return f"vLLM {vllm.__version__} is not one of {VLLM_VERSIONS}"
    fn = TritonExperts.apply
    if getattr(fn, "__module__", None) != __name__:
        params = list(inspect.signature(fn).parameters)
        if params != APPLY_PARAMS:
            return f"TritonExperts.apply takes {params}, expected {APPLY_PARAMS}"
    missing = CONTEXT_FIELDS - {f.name for f in dataclasses.fields(MoELoRAContext)}
    return f"MoELoRAContext lacks {sorted(missing)}" if missing else None


def install() -> bool:
    """Route TritonExperts.apply to the torch computation in this process; False (and why, on stderr) when the
    installed vLLM does not match."""
    import sys

    why = mismatch()
    if why is not None:
        print(f"[lrsweep] CPU MoE LoRA experts not installed, vLLM's Triton experts kept: {why}", file=sys.stderr,
              flush=True)
        return False
    from vllm.model_executor.layers.fused_moe.experts.triton_moe import TritonExperts

    TritonExperts.apply = apply
    return True
