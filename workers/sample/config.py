"""The sample block (conf/sample/*.yaml): what the sampler asks of vLLM (workers/sample/sampler.py), its engine's
knobs included. Planner-owned fields hold AUTO until orchestrator/plan/resolve.py fills them in from the plan (on
CPU from PlanConfig's cpu_*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eval.knobs import AT_LEAST_1, AUTO, FRACTION_UP_TO_1, NON_NEGATIVE, is_auto, knob
from workers.errors import require
from workers.sample.vllm_cpu_lora import KERNELS as CPU_LORA_KERNELS  # a stdlib-only module: vLLM is not imported


@dataclass
class EngineConfig:
    """vLLM's knobs. AUTO fields come from the plan (orchestrator/plan/resolve.py); on CPU from PlanConfig's cpu_*."""

    gpu_memory_utilization: Any = knob(AUTO, within=FRACTION_UP_TO_1)  # float in (0, 1]
    cpu_kvcache_space_gib: int = knob(1, within=AT_LEAST_1)
    max_loras: Any = knob(AUTO, within=AT_LEAST_1, kind=int)  # int: adapters in one batch (one per running trial)
    max_cpu_loras: Any = knob(AUTO, within=AT_LEAST_1, kind=int)  # int >= max_loras
    tensor_parallel_size: Any = knob(AUTO, within=AT_LEAST_1, kind=int)  # int
    fully_sharded_loras: Any = knob(AUTO, kind=bool)  # bool: both LoRA factors split over the TP ranks
    max_lora_rank: Any = knob(AUTO, within=AT_LEAST_1, kind=int)  # int, one of vLLM's allowed ranks >= train.lora_rank
    # bool: vLLM's enable_mixed_moe_lora_format, which PEFT's fused 3-D expert adapters need (model.lora_experts)
    moe_lora_3d: Any = knob(AUTO, kind=bool)
    # bool: the sampler holds tensor_parallel_size GPUs of its own (else shares)
    dedicated_gpus: Any = knob(AUTO, kind=bool)
    # bool: vLLM sleep mode (level 1) between checkpoint batches, so trainers sharing its GPUs get the memory back;
    # auto: on when the plan shares the GPUs (CUDA only: vLLM's CPU platform has no sleep mode)
    sleep: Any = knob(AUTO, kind=bool)
    enforce_eager: bool = True
    # sequences per engine step; null: vLLM's default (256 on CPU)
    max_num_seqs: int | None = knob(None, within=AT_LEAST_1)
    # CPU builds of vLLM: grouped (workers/sample/vllm_cpu_lora.py) or vllm (its own)
    cpu_lora_kernel: str = knob("grouped", one_of=tuple(CPU_LORA_KERNELS))


@dataclass
class SampleConfig:
    n_eval_prompts: int = knob(100, within=AT_LEAST_1)
    n_train_prompts: int = knob(100, within=AT_LEAST_1)
    # null: the model's own default (model.max_new_tokens), set by to_typed
    max_new_tokens: int | None = knob(None, within=AT_LEAST_1)
    temperature: float = knob(1.0, within=NON_NEGATIVE)
    top_p: float = knob(1.0, within=FRACTION_UP_TO_1)
    seed: int = knob(0, within=NON_NEGATIVE)
    engine: EngineConfig = field(default_factory=EngineConfig)


# the values vLLM 0.32 accepts for LoRAConfig.max_lora_rank (vllm/config/lora.py, MaxLoRARanks)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def validate_engine(e: EngineConfig, lora_rank: int) -> None:
    """What the engine's knobs cannot say alone: vLLM's allowed LoRA ranks, and its CPU cache against its slots."""
    require(is_auto(e.max_cpu_loras) or is_auto(e.max_loras) or e.max_cpu_loras >= e.max_loras,
            f"sample.engine.max_cpu_loras={e.max_cpu_loras}: must be auto or >= sample.engine.max_loras="
            f"{e.max_loras} (vLLM keeps every GPU slot's adapter in its CPU cache)")
    require(is_auto(e.max_lora_rank) or (e.max_lora_rank in VLLM_LORA_RANKS and e.max_lora_rank >= lora_rank),
            f"sample.engine.max_lora_rank={e.max_lora_rank}: must be auto or one of vLLM's {list(VLLM_LORA_RANKS)} "
            f">= train.lora_rank={lora_rank}")


def unplanned_engine(**knobs: Any) -> EngineConfig:
    """The engine block of an engine started without a plan (tests, benches): one GPU's 90% or the CPU, one adapter
    slot of rank 8, no sharded LoRA, no sleep mode; `knobs` change any field."""
    planned = {"gpu_memory_utilization": 0.9, "max_loras": 1, "max_cpu_loras": 1, "tensor_parallel_size": 1,
               "fully_sharded_loras": False, "max_lora_rank": 8, "moe_lora_3d": False, "dedicated_gpus": False,
               "sleep": False}
    return EngineConfig(**{**planned, **knobs})
