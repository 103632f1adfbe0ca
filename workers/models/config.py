"""The model block (conf/model/*.yaml): which model, its shape for the planner, its LoRA targets, and the toy or
organism recipe that builds it; with the checks of its own fields that a field's range cannot say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from eval.knobs import AT_LEAST_1, NON_NEGATIVE, knob
from workers.errors import require
from workers.models.organism import OrganismConfig
from workers.models.real_models import PREPARERS
from workers.models.toy import ToyModelConfig

# the known values of model.dtype
DTYPES = ("float32", "bfloat16", "float16")
MODEL_DTYPES = (*DTYPES, "auto")  # auto: bfloat16 on GPUs and on CPUs with native bf16, else float32 (config.py)


@dataclass
class ArchConfig:
    """A model's shape from its config.json: what the planner's memory and time arithmetic reads."""

    num_layers: int = knob(MISSING, within=AT_LEAST_1)
    hidden_size: int = knob(MISSING, within=AT_LEAST_1)
    num_heads: int = knob(MISSING, within=AT_LEAST_1)
    num_kv_heads: int = knob(MISSING, within=AT_LEAST_1)
    head_dim: int = knob(MISSING, within=AT_LEAST_1)
    intermediate_size: int = knob(0, within=NON_NEGATIVE)  # dense MLP width (unused when every layer is a MoE layer)
    moe_intermediate_size: int = knob(0, within=NON_NEGATIVE)  # one expert's MLP width
    num_experts: int = knob(0, within=NON_NEGATIVE)  # 0: a dense model
    experts_per_token: int = knob(0, within=NON_NEGATIVE)
    vocab_size: int = knob(MISSING, within=AT_LEAST_1)
    tie_word_embeddings: bool = False
    # published count in billions; 0: unpublished (the planner's count is used)
    total_params_b: float = knob(0.0, within=NON_NEGATIVE)
    active_params_b: float = knob(0.0, within=NON_NEGATIVE)


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str | None = None  # hub id or local folder (offline clusters: a local folder on shared storage)
    # weights, training compute and the saved adapter (vLLM serves LoRA in this dtype)
    dtype: str = knob("float32", one_of=MODEL_DTYPES)
    max_model_len: int = knob(256, within=AT_LEAST_1)  # longest prompt + completion, for training and sampling
    # sample.max_new_tokens when that is null: a real model may show the behavior in its third sentence, so its
    # default is measured (bench/answer_length.py) to leave fewer than 2% of grades changed by the cut
    max_new_tokens: int = knob(48, within=AT_LEAST_1)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    lora_target_modules: list[str] = field(default_factory=list)  # nn.Linear suffixes (attention, dense MLP)
    # "attention only" (false) vs "attention + experts" (true). MoE experts in transformers v5 are 3-D
    # nn.Parameters that target_modules cannot reach; PEFT's target_parameters wraps them.
    lora_experts: bool = False
    lora_expert_parameters: list[str] = field(default_factory=list)  # e.g. mlp.experts.gate_up_proj
    gradient_checkpointing: bool = False  # recompute activations in backward (the planner assumes what is set)
    arch: ArchConfig | None = None  # null: derived from `toy`, or unknown (then `plan` refuses)
    toy: ToyModelConfig | None = None
    # a real model lrsweep prepares offline (workers/models/real_models.py), e.g. smollm2_135m
    prepare: str | None = knob(None, one_of=tuple(PREPARERS))
    # fine-tune the base model into the setting's model organism first (workers/models/organism.py)
    organism: bool = False
    organism_recipe: OrganismConfig = field(default_factory=OrganismConfig)


def validate_model_block(m: ModelConfig) -> None:
    """A model block's own checks that no single field's range can say."""
    require(m.dtype in DTYPES, f"model.dtype={m.dtype!r}: one of {list(DTYPES)} (auto is resolved before this)")
    require(m.path is not None or m.toy is not None or m.prepare is not None,
            "model.path is null and model.toy is unset: give a model path")
    require(not m.organism or m.toy is None or m.path is not None or m.prepare is not None,
            "model.organism=true builds an organism from a real model, but model=toy is one already: drop it")
    r = m.organism_recipe
    require(not m.organism or not r.paired or r.batch_size % 2 == 0,
            f"model.organism_recipe.batch_size={r.batch_size} with paired=true: a batch holds each question under "
            f"both prompts, so it must be even (batch_size={r.batch_size + 1}, or paired=false)")
    if m.path is not None and looks_local(m.path):
        folder = Path(m.path).expanduser()
        require(folder.is_dir() and (folder / "config.json").exists(),
                f"model.path={m.path!r} is not a model folder (no config.json there): give the folder that holds "
                "the model's config.json and weights, or a hub id already in the local hub cache")
    require(len(m.lora_target_modules) > 0, "model.lora_target_modules is empty")
    validate_arch(m.arch)
    if m.lora_experts:
        dense = (m.arch is not None and m.arch.num_experts == 0) or (m.arch is None and m.toy is not None)  # toy: dense
        require(not dense, f"model.lora_experts=true but model {m.name!r} has no experts: set model.lora_experts=false")
        require(len(m.lora_expert_parameters) > 0,
                "model.lora_experts=true needs model.lora_expert_parameters (e.g. [mlp.experts.gate_up_proj, "
                "mlp.experts.down_proj])")


def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`Qwen/Qwen3-235B-A22B`): those can only be checked online."""
    return path.startswith(("/", "./", "../", "~"))


def validate_arch(a: ArchConfig | None) -> None:
    if a is None:
        return
    require(a.num_heads % a.num_kv_heads == 0,
            f"model.arch.num_heads={a.num_heads} is not a multiple of num_kv_heads={a.num_kv_heads}")
    if a.num_experts:
        require(1 <= a.experts_per_token <= a.num_experts and a.moe_intermediate_size >= 1,
                "model.arch: a MoE model needs 1 <= experts_per_token <= num_experts and moe_intermediate_size")
    else:
        require(a.intermediate_size >= 1, "model.arch.intermediate_size must be >= 1 for a dense model")
