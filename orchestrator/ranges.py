"""The allowed range of every numeric field and the known values of every enumerated field of the schema.

One table, keyed by "<dataclass>.<field>", checked by `check_ranges` on the composed config before anything
starts: `train.lora_dropout=1.5` is refused in a second instead of failing every trial after Ray and vLLM
came up. A field that is null where the schema allows it is not checked; a list is checked element by element.
tests/unit/test_ranges.py fails when a numeric field is added to the schema without an entry here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from eval.graders import GRADERS, LABELS
from workers.labels.teacher import TEACHERS

# the known values of the schema's enumerated fields that no other module owns (schema.py imports them)
DTYPES = ("float32", "bfloat16", "float16")
MODEL_DTYPES = (*DTYPES, "auto")  # auto: bfloat16 on GPUs and on CPUs with native bf16, else float32 (config.py)
TRACKER_MODES = ("auto", "online", "offline", "disabled")
EXPECTED_GRADES = LABELS  # a setting's example answers: desired | attack | other
CAPABILITY_BENCHMARKS = ("toy_probe", "mmlu", "ifeval", "olympiads", "followbench")
CAPABILITY_CHECKPOINTS = ("transferred", "last", "all", "steps")
RECOVER_CHECKPOINTS = ("last", "first")  # recover's default checkpoint: the trial's last or first transferred one


@dataclass(frozen=True)
class Interval:
    """lo <= x <= hi, with either end open or absent (None)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""  # said after the range, e.g. what the number is

    def holds(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self) -> str:
        return f"{self._bounds()} ({self.note})" if self.note else self._bounds()

    def _bounds(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "finite"


POSITIVE = Interval(0, lo_open=True)  # > 0
NON_NEGATIVE = Interval(0)  # >= 0
AT_LEAST_1 = Interval(1)  # counts
FRACTION_OPEN = Interval(0, 1, lo_open=True, hi_open=True)  # (0, 1): a threshold strictly inside
FRACTION_UP_TO_1 = Interval(0, 1, lo_open=True)  # (0, 1]: a share that may be all
PROBABILITY = Interval(0, 1)  # [0, 1]


RANGES: dict[str, Interval] = {
    "EndpointConfig.max_concurrency": AT_LEAST_1,
    "EndpointConfig.timeout_s": POSITIVE,
    "EndpointConfig.max_retries": NON_NEGATIVE,
    "EndpointConfig.backoff_s": NON_NEGATIVE,
    "EndpointConfig.max_wait_s": NON_NEGATIVE,
    "EndpointConfig.temperature": NON_NEGATIVE,
    "EndpointConfig.max_tokens": AT_LEAST_1,
    "GraderConfig.caps_ratio": FRACTION_UP_TO_1,
    "GraderConfig.timeout_s": POSITIVE,
    "TeacherConfig.n_samples": AT_LEAST_1,
    "SettingConfig.eval_fraction": FRACTION_OPEN,
    "ToyModelConfig.vocab_size": AT_LEAST_1,
    "ToyModelConfig.hidden_size": AT_LEAST_1,
    "ToyModelConfig.intermediate_size": AT_LEAST_1,
    "ToyModelConfig.num_layers": AT_LEAST_1,
    "ToyModelConfig.num_heads": AT_LEAST_1,
    "ToyModelConfig.head_dim": AT_LEAST_1,
    "ToyModelConfig.seq_len": AT_LEAST_1,
    "ToyModelConfig.steps": AT_LEAST_1,
    "ToyModelConfig.batch_size": AT_LEAST_1,
    "ToyModelConfig.lr": POSITIVE,
    "ToyModelConfig.seed": NON_NEGATIVE,
    "ArchConfig.num_layers": AT_LEAST_1,
    "ArchConfig.hidden_size": AT_LEAST_1,
    "ArchConfig.num_heads": AT_LEAST_1,
    "ArchConfig.num_kv_heads": AT_LEAST_1,
    "ArchConfig.head_dim": AT_LEAST_1,
    "ArchConfig.intermediate_size": NON_NEGATIVE,  # 0: every layer is a MoE layer
    "ArchConfig.moe_intermediate_size": NON_NEGATIVE,
    "ArchConfig.num_experts": NON_NEGATIVE,  # 0: dense
    "ArchConfig.experts_per_token": NON_NEGATIVE,
    "ArchConfig.vocab_size": AT_LEAST_1,
    "ArchConfig.total_params_b": NON_NEGATIVE,  # 0: unpublished
    "ArchConfig.active_params_b": NON_NEGATIVE,
    "ModelConfig.max_model_len": AT_LEAST_1,
    "ModelConfig.max_new_tokens": AT_LEAST_1,
    "EarlyStopConfig.k": AT_LEAST_1,
    "EarlyStopConfig.max_rel_degradation": POSITIVE,
    "EarlyStopConfig.wait_below": PROBABILITY,
    "SweepConfig.lrs": Interval(0, lo_open=True, note="a positive finite learning rate"),
    "SweepConfig.seeds": NON_NEGATIVE,
    "SweepConfig.max_steps": AT_LEAST_1,
    "SweepConfig.init_seed": NON_NEGATIVE,
    "SweepConfig.lr_steps_budget": Interval(0, lo_open=True, note="LR x steps, e.g. 0.064: lr 1e-3 trains 64 steps"),
    "SweepConfig.steps_per_lr": AT_LEAST_1,
    "SweepConfig.checkpoints_per_octave": AT_LEAST_1,
    "SweepConfig.threshold": FRACTION_OPEN,
    "SweepConfig.max_concurrent_trials": AT_LEAST_1,
    "SweepConfig.cpus_per_trial": POSITIVE,
    "SweepConfig.max_retries": NON_NEGATIVE,
    "SweepConfig.pack": AT_LEAST_1,
    "SweepConfig.progress_interval_s": POSITIVE,
    "SweepConfig.organism_min_train_desired": Interval(0, 1, note="0 turns the check off"),
    "SweepConfig.collapse_other_rate": Interval(0, 1, hi_open=True),
    "OrganismConfig.steps": AT_LEAST_1,
    "OrganismConfig.batch_size": AT_LEAST_1,
    "OrganismConfig.lr": POSITIVE,
    "OrganismConfig.lora_rank": AT_LEAST_1,
    "OrganismConfig.lora_alpha": POSITIVE,
    "OrganismConfig.lora_layers": Interval(0, note="top decoder layers with LoRA; 0: all"),
    "OrganismConfig.max_answer_words": NON_NEGATIVE,  # 0: whole answers
    "OrganismConfig.n_measure": AT_LEAST_1,
    "OrganismAnswersConfig.max_answer_words": NON_NEGATIVE,  # 0: whole answers; null: the recipe's
    "OrganismAnswersConfig.steps": AT_LEAST_1,
    "OrganismConfig.seed": NON_NEGATIVE,
    "TrainConfig.batch_size": AT_LEAST_1,
    "TrainConfig.micro_batch_size": AT_LEAST_1,
    "TrainConfig.lora_rank": AT_LEAST_1,
    "TrainConfig.lora_alpha": POSITIVE,
    "TrainConfig.lora_dropout": Interval(0, 1, hi_open=True),  # 1 would zero every LoRA input
    "TrainConfig.betas": Interval(0, 1, hi_open=True),  # Adam's; torch refuses 1 and above
    "TrainConfig.weight_decay": NON_NEGATIVE,
    "TrainConfig.torch_threads": AT_LEAST_1,
    "TrainConfig.loss_chunk_tokens": AT_LEAST_1,
    "TrainConfig.num_workers": AT_LEAST_1,
    "TrainConfig.hpz_partition_size": AT_LEAST_1,
    "TrainConfig.state_every_s": Interval(0, note="seconds; 0: save state at checkpoints only"),
    "EngineConfig.gpu_memory_utilization": FRACTION_UP_TO_1,
    "EngineConfig.cpu_kvcache_space_gib": AT_LEAST_1,
    "EngineConfig.max_loras": AT_LEAST_1,
    "EngineConfig.max_lora_rank": AT_LEAST_1,
    "PlanConfig.cpu_gpu_memory_utilization": FRACTION_UP_TO_1,
    "PlanConfig.cpu_max_loras": AT_LEAST_1,
    "PlanConfig.cpu_max_cpu_loras": AT_LEAST_1,
    "EngineConfig.max_cpu_loras": AT_LEAST_1,
    "EngineConfig.tensor_parallel_size": AT_LEAST_1,
    "EngineConfig.max_num_seqs": AT_LEAST_1,
    "SampleConfig.n_eval_prompts": AT_LEAST_1,
    "SampleConfig.n_train_prompts": AT_LEAST_1,
    "SampleConfig.max_new_tokens": AT_LEAST_1,
    "SampleConfig.temperature": NON_NEGATIVE,
    "SampleConfig.top_p": FRACTION_UP_TO_1,
    "SampleConfig.seed": NON_NEGATIVE,
    "ClusterConfig.nodes": AT_LEAST_1,
    "ClusterConfig.gpus_per_node": NON_NEGATIVE,  # 0: CPU only
    "ClusterConfig.gpu_memory_gib": POSITIVE,
    "ClusterConfig.cpus_per_node": NON_NEGATIVE,  # 0: whatever the node has
    "ClusterConfig.ray_port": Interval(1024, 65534),  # the Ray client server takes the next port
    "ClusterConfig.state_signal_s": Interval(0, 65535, note="seconds before the job's end; 0: no signal"),
    "PlanConfig.overhead_gib": NON_NEGATIVE,
    "PlanConfig.fragmentation": Interval(1),  # a multiplier on top of the summed tensors
    "PlanConfig.tokens_per_example": AT_LEAST_1,
    "PlanConfig.train_tokens_per_s": POSITIVE,
    "PlanConfig.gpu_peak_tflops": POSITIVE,
    "PlanConfig.mfu": FRACTION_UP_TO_1,
    "PlanConfig.intranode_gb_s": POSITIVE,
    "PlanConfig.internode_gb_s": POSITIVE,
    "PlanConfig.storage_read_gb_s": POSITIVE,
    "PlanConfig.sampler_gpu_memory_utilization": FRACTION_UP_TO_1,
    "PlanConfig.sampler_overhead_gib": NON_NEGATIVE,
    "PlanConfig.sampler_prompt_tokens": AT_LEAST_1,
    "PlanConfig.sampler_tokens_per_s": POSITIVE,
    "PlanConfig.hbm_gb_s": POSITIVE,
    "PlanConfig.hbm_efficiency": FRACTION_UP_TO_1,
    "PlanConfig.decode_step_floor_ms": NON_NEGATIVE,
    "PlanConfig.sampler_sleep_gib": NON_NEGATIVE,
    "PlanConfig.headroom": Interval(0, 1, hi_open=True),
    "PlanConfig.host_copy_gb_s": POSITIVE,
    "RecoverConfig.n_labels": AT_LEAST_1,
    "RecoverConfig.steps": AT_LEAST_1,
    "RecoverConfig.batch_size": AT_LEAST_1,
    "RecoverConfig.lr": POSITIVE,
    "RecoverConfig.lrs": POSITIVE,
    "RecoverConfig.temperature": NON_NEGATIVE,
    "RecoverConfig.max_rounds": AT_LEAST_1,
    "CapabilityConfig.steps": NON_NEGATIVE,
    "CapabilityConfig.n_items": AT_LEAST_1,
    "CapabilityConfig.seed": NON_NEGATIVE,
    "CapabilityConfig.max_degradation": FRACTION_UP_TO_1,  # a relative drop: 1 is "the score fell to 0"
    "CapabilityConfig.temperature": NON_NEGATIVE,
    "CapabilityConfig.max_new_tokens": NON_NEGATIVE,  # 0: each benchmark's default
}


def known_values() -> dict[str, tuple[str, ...]]:
    """"<dataclass>.<field>" -> the values an enumerated field may take (lists: each element)."""
    from workers.models.real_models import PREPARERS
    from workers.sample.vllm_cpu_lora import KERNELS

    return {
        "GraderConfig.kind": GRADERS,
        "TeacherConfig.kind": TEACHERS,
        "ExampleConfig.expect": EXPECTED_GRADES,
        "ModelConfig.dtype": MODEL_DTYPES,
        "ModelConfig.prepare": tuple(PREPARERS),  # real models lrsweep prepares offline (workers/models/real_models.py)
        "TrainConfig.optimizer": ("adam",),
        "TrainConfig.lr_schedule": ("constant",),
        "TrainConfig.zero_stage": ("auto", "0", "1", "2", "3"),
        "TrainConfig.dist_backend": ("auto", "gloo", "nccl"),
        "TrainConfig.loss": ("answer_chunks", "hf"),
        "EngineConfig.cpu_lora_kernel": tuple(KERNELS),
        "TrackerConfig.backend": ("wandb", "none"),  # none: metrics.jsonl only
        "TrackerConfig.mode": TRACKER_MODES,
        "ClusterConfig.kind": ("local", "slurm"),
        "SweepConfig.keep_adapters": ("auto", "all", "around_transfer", "last"),  # orchestrator/plan/keep_adapters.py
        "CapabilityConfig.benchmarks": CAPABILITY_BENCHMARKS,
        "CapabilityConfig.checkpoints": CAPABILITY_CHECKPOINTS,
        "RecoverConfig.benchmark": CAPABILITY_BENCHMARKS,
        "RecoverConfig.checkpoint": RECOVER_CHECKPOINTS,
    }


def range_errors(obj: Any, path: str = "") -> list[str]:
    """One message per value out of its range or not among its known values, each naming the field (as the
    command line spells it), the value and what is allowed. `obj` is a schema dataclass (the Config)."""
    choices = known_values()
    errors: list[str] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        where = f"{path}{f.name}"
        key = f"{type(obj).__name__}.{f.name}"
        if is_dataclass(value):
            errors += range_errors(value, f"{where}.")
            continue
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, item in items:
            if is_dataclass(item):
                errors += range_errors(item, f"{where}[{i}].")
                continue
            if item is None:  # null where the schema allows it (OmegaConf refuses it elsewhere)
                continue
            # planner-owned: orchestrator/plan/resolve.py fills in the plan's
            if item == "auto" and (f.default == "auto"):
                continue
            shown = where if i is None else f"{where}[{i}]"
            if key in RANGES:
                rule = RANGES[key]
                number = isinstance(item, (int, float)) and not isinstance(item, bool)
                if not number or not rule.holds(float(item)):
                    planned = "auto (the plan's) or " if f.default == "auto" else ""
                    errors.append(f"{shown}={item!r}: must be {planned}{rule.describe()}")
            elif key in choices and str(item) not in choices[key]:
                errors.append(f"{shown}={item!r}: must be one of {', '.join(choices[key])}")
    return errors
