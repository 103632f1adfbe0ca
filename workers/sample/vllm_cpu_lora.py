"""Grouped multi-LoRA kernels for vLLM's CPU backend, installed in its engine processes as a vLLM plugin.

vLLM's CPU path (PunicaWrapperCPU -> vllm.lora.ops.torch_ops) applies LoRA by gathering every token's adapter
weights (`w[indices]`, one [out, rank] matrix per token) and contracting them with einsum. On a small model that
gather costs more than the model: on the toy, sampling 8 adapters x 256 prompts, LoRA took about 78% of the
forward pass. vLLM lays a batch's tokens out request by request, so one adapter's tokens form runs, and these
kernels do one matmul per run instead (bench/README.md has the figures).

They also give index -1 its documented meaning, no adapter. vLLM's torch ops read `w[-1]`, the last slot, so a
base-model prompt batched while every slot holds an adapter was sampled with that adapter.

The plugin (entry point `vllm.general_plugins` in pyproject.toml) runs in every vLLM process but changes nothing
unless the process was asked: `LRSWEEP_VLLM_CPU_LORA=grouped` (the sampler sets it from
`sample.engine.cpu_lora_kernel`) and vLLM's platform is the CPU. GPU builds keep vLLM's own kernels. On CPU it
also gives vLLM's fused-MoE LoRA layer experts it can run (workers/sample/vllm_cpu_moe_lora.py), with either kernel.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

ENV = "LRSWEEP_VLLM_CPU_LORA"
KERNELS = ("grouped", "vllm")

# The ops this module replaces, with the parameters vLLM 0.32 gives them. vLLM calls them positionally, so a
# version whose ops take other parameters keeps its own kernels (and says so) rather than get wrong answers.
SIGNATURES = {
    "bgmv_shrink": ["inputs", "lora_b_weights", "output_tensor", "lora_indices_tensor", "scaling"],
    "bgmv_expand": ["inputs", "lora_b_weights", "output_tensor", "lora_indices_tensor", "add_inputs"],
    "bgmv_expand_slice": ["inputs", "lora_b_weights", "output_tensor", "lora_indices_tensor", "slice_offset",
                          "slice_size", "add_inputs"],
}


def runs(indices: Any) -> list[tuple[int, int, int]]:
    """(adapter slot, start, end) for each run of equal consecutive indices."""
    import torch

    n = indices.numel()
    if n == 0:
        return []
    cuts = (torch.nonzero(indices[1:] != indices[:-1]).flatten() + 1).tolist()
    starts, ends = [0, *cuts], [*cuts, n]
    return list(zip(indices[starts].tolist(), starts, ends, strict=True))


def _slot(weights: Any, slot: int, dtype: Any) -> Any:
    w = weights[slot]  # [1, out, in] or [out, in]
    return (w.squeeze(0) if w.dim() == 3 else w).to(dtype)


def bgmv_shrink(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                scaling: float = 1.0) -> None:
    """output[t, :rank] = scaling * inputs[t] @ A[slot(t)].T; zero where slot(t) is -1 (no adapter)."""
    inputs, rank = inputs.to(output_tensor.dtype), lora_b_weights.shape[-2]  # vLLM names A "lora_b_weights" here
    for slot, start, end in runs(lora_indices_tensor):
        if slot < 0:
            output_tensor[start:end, :rank] = 0
            continue
        output_tensor[start:end, :rank] = scaling * (inputs[start:end] @ _slot(lora_b_weights, slot, inputs.dtype).T)


def _expand(inputs: Any, weights: Any, output: Any, indices: Any, offset: int, size: int, add: bool) -> None:
    inputs = inputs.to(output.dtype)
    spans = runs(indices)
    broadcast = inputs.shape[0] == 1 and output.shape[0] != 1  # as vLLM's ops: one input row goes to every row
    if broadcast:
        spans = [(spans[0][0], 0, output.shape[0])] if spans else []
    width = min(weights.shape[-2], size, output.shape[1] - offset)  # adapter and model may pad differently
    for slot, start, end in spans:
        target = output[start:end, offset:offset + width]
        if slot < 0:
            if not add:
                target.zero_()
            continue
        rows = inputs if broadcast else inputs[start:end]
        delta = rows @ _slot(weights, slot, inputs.dtype)[:width].T
        if add:
            target += delta
        else:
            target.copy_(delta)


def bgmv_expand(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                add_inputs: bool = True) -> None:
    """output[t, :out] (+)= inputs[t] @ B[slot(t)].T; no delta where slot(t) is -1."""
    _expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, 0, output_tensor.shape[1], add_inputs)


def bgmv_expand_slice(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    """output[t, offset:offset+size] (+)= inputs[t] @ B[slot(t)].T; no delta where slot(t) is -1."""
    _expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size, add_inputs)


GROUPED = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}


def targets() -> list[tuple[Any, str]]:
    """(module, name) of every reference to the ops: vLLM's sgmv_* ops call them through their own module, and
    the CPU punica wrapper imported them by name."""
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    return [(mod, name) for mod in (ops, punica_cpu) for name in GROUPED]


def mismatch() -> str | None:
    """Why this vLLM's ops cannot be replaced (their parameters differ), or None."""
    for mod, name in targets():
        fn = getattr(mod, name, None)
        if fn is None:
            return f"{mod.__name__}.{name} is missing"
        if getattr(fn, "__module__", None) == __name__:
            continue  # already ours
        params = list(inspect.signature(fn).parameters)
        if params != SIGNATURES[name]:
            return f"{mod.__name__}.{name} takes {params}, expected {SIGNATURES[name]}"
    return None


def install() -> bool:
    """Point vLLM's CPU LoRA ops at the grouped kernels in this process; False (and a line on stderr) if the
    installed vLLM's ops do not match."""
    why = mismatch()
    if why is not None:
        print(f"[lrsweep] grouped CPU LoRA kernels not installed, vLLM's own kept: {why}", file=sys.stderr,
              flush=True)
        return False
    for mod, name in targets():
        setattr(mod, name, GROUPED[name])
    return True


def registered() -> bool:
    """Whether vLLM will find the plugin: the package is installed with its entry points (`pip install -e .`)."""
    from importlib.metadata import entry_points

    return any(e.value == f"{__name__}:register" for e in entry_points(group="vllm.general_plugins"))


def register() -> None:
    """vLLM general-plugin hook: runs in each vLLM process; acts only where lrsweep's sampler asked, on CPU.

    Either kernel choice gets the MoE experts with LoRA (workers/sample/vllm_cpu_moe_lora.py): vLLM has no CPU path
    for them at all. "grouped" also swaps the dense LoRA ops."""
    kernel = os.environ.get(ENV)
    if kernel not in KERNELS:
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from workers.sample import vllm_cpu_moe_lora

    vllm_cpu_moe_lora.install()
    if kernel == "grouped":
        install()
