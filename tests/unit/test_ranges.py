"""Every numeric and enumerated field of the schema carries its rule on its own field (`knob(..., within=...)` or
`one_of=...`, eval/knobs.py), `validate` checks them all, and this file lists each one with a bad value and the
message the user gets. A numeric field added to the schema without a range, or a string field not classified as
enum or free text, fails test_every_field_is_classified."""

import copy
import dataclasses
import re
import types
import typing

import pytest

from eval.knobs import AT_LEAST_1, AUTO, ONE_OF, WITHIN, Interval, knob, knob_errors
from orchestrator import schema
from orchestrator.config import compose_config
from orchestrator.schema import ConfigError, validate
from workers.models.config import ArchConfig
from workers.sample.config import EngineConfig
from workers.train.config import TrainConfig

# (field as the command line spells it, bad value, message the user sees)
CHECKS = [
    ("setting.grader.endpoint.max_concurrency", 0, "setting.grader.endpoint.max_concurrency=0: must be >= 1"),
    ("setting.grader.endpoint.timeout_s", 0.0, "setting.grader.endpoint.timeout_s=0.0: must be > 0"),
    ("setting.grader.endpoint.max_retries", -1, "setting.grader.endpoint.max_retries=-1: must be >= 0"),
    ("setting.grader.endpoint.backoff_s", -1.0, "setting.grader.endpoint.backoff_s=-1.0: must be >= 0"),
    ("setting.grader.endpoint.max_wait_s", -5.0, "setting.grader.endpoint.max_wait_s=-5.0: must be >= 0"),
    ("setting.grader.endpoint.temperature", -0.1, "setting.grader.endpoint.temperature=-0.1: must be >= 0"),
    ("setting.grader.endpoint.max_tokens", 0, "setting.grader.endpoint.max_tokens=0: must be >= 1"),
    ("setting.grader.caps_ratio", 1.5, "setting.grader.caps_ratio=1.5: must be in (0, 1]"),
    ("setting.grader.timeout_s", 0.0, "setting.grader.timeout_s=0.0: must be > 0"),
    ("setting.teacher.n_samples", 0, "setting.teacher.n_samples=0: must be >= 1"),
    ("setting.eval_fraction", 1.0, "setting.eval_fraction=1.0: must be in (0, 1)"),
    ("model.toy.vocab_size", 0, "model.toy.vocab_size=0: must be >= 1"),
    ("model.toy.hidden_size", 0, "model.toy.hidden_size=0: must be >= 1"),
    ("model.toy.intermediate_size", 0, "model.toy.intermediate_size=0: must be >= 1"),
    ("model.toy.num_layers", 0, "model.toy.num_layers=0: must be >= 1"),
    ("model.toy.num_heads", 0, "model.toy.num_heads=0: must be >= 1"),
    ("model.toy.head_dim", 0, "model.toy.head_dim=0: must be >= 1"),
    ("model.toy.seq_len", 0, "model.toy.seq_len=0: must be >= 1"),
    ("model.toy.steps", 0, "model.toy.steps=0: must be >= 1"),
    ("model.toy.batch_size", 0, "model.toy.batch_size=0: must be >= 1"),
    ("model.toy.lr", 0.0, "model.toy.lr=0.0: must be > 0"),
    ("model.toy.seed", -1, "model.toy.seed=-1: must be >= 0"),
    ("model.arch.num_layers", 0, "model.arch.num_layers=0: must be >= 1"),
    ("model.arch.hidden_size", 0, "model.arch.hidden_size=0: must be >= 1"),
    ("model.arch.num_heads", 0, "model.arch.num_heads=0: must be >= 1"),
    ("model.arch.num_kv_heads", 0, "model.arch.num_kv_heads=0: must be >= 1"),
    ("model.arch.head_dim", 0, "model.arch.head_dim=0: must be >= 1"),
    ("model.arch.intermediate_size", -1, "model.arch.intermediate_size=-1: must be >= 0"),
    ("model.arch.moe_intermediate_size", -1, "model.arch.moe_intermediate_size=-1: must be >= 0"),
    ("model.arch.num_experts", -1, "model.arch.num_experts=-1: must be >= 0"),
    ("model.arch.experts_per_token", -1, "model.arch.experts_per_token=-1: must be >= 0"),
    ("model.arch.vocab_size", 0, "model.arch.vocab_size=0: must be >= 1"),
    ("model.arch.total_params_b", -235.0, "model.arch.total_params_b=-235.0: must be >= 0"),
    ("model.arch.active_params_b", -22.0, "model.arch.active_params_b=-22.0: must be >= 0"),
    ("model.max_model_len", 0, "model.max_model_len=0: must be >= 1"),
    ("model.max_new_tokens", 0, "model.max_new_tokens=0: must be >= 1"),
    ("sweep.organism_min_train_desired", 1.5,
     "sweep.organism_min_train_desired=1.5: must be in [0, 1] (0 turns the check off)"),
    ("sweep.collapse_other_rate", 1.0, "sweep.collapse_other_rate=1.0: must be in [0, 1)"),
    ("sweep.early_stop.k", 0, "sweep.early_stop.k=0: must be >= 1"),
    ("sweep.early_stop.max_rel_degradation", 0.0, "sweep.early_stop.max_rel_degradation=0.0: must be > 0"),
    ("sweep.early_stop.wait_below", 1.5, "sweep.early_stop.wait_below=1.5: must be in [0, 1]"),
    ("sweep.lrs", [1e-3, float("inf")], "sweep.lrs[1]=inf: must be > 0 (a positive finite learning rate)"),
    ("sweep.seeds", [0, -1], "sweep.seeds[1]=-1: must be >= 0"),
    ("sweep.max_steps", 0, "sweep.max_steps=0: must be >= 1"),
    ("sweep.init_seed", -1, "sweep.init_seed=-1: must be >= 0"),
    ("sweep.lr_steps_budget", 0.0, "sweep.lr_steps_budget=0.0: must be > 0"),
    ("sweep.steps_per_lr", [8, 0, 8, 8], "sweep.steps_per_lr[1]=0: must be >= 1"),
    ("sweep.checkpoints_per_octave", 0, "sweep.checkpoints_per_octave=0: must be >= 1"),
    ("sweep.threshold", float("nan"), "sweep.threshold=nan: must be in (0, 1)"),
    ("sweep.max_concurrent_trials", 0, "sweep.max_concurrent_trials=0: must be >= 1"),
    ("sweep.cpus_per_trial", 0.0, "sweep.cpus_per_trial=0.0: must be > 0"),
    ("sweep.max_retries", -1, "sweep.max_retries=-1: must be >= 0"),
    ("sweep.progress_interval_s", 0.0, "sweep.progress_interval_s=0.0: must be > 0"),
    ("sweep.pack", 0, "sweep.pack=0: must be auto (the plan's) or >= 1"),
    ("train.batch_size", 0, "train.batch_size=0: must be >= 1"),
    ("train.micro_batch_size", 0, "train.micro_batch_size=0: must be auto (the plan's) or >= 1"),
    ("train.lora_rank", 0, "train.lora_rank=0: must be >= 1"),
    ("train.lora_alpha", 0, "train.lora_alpha=0: must be > 0"),
    ("train.lora_dropout", 1.5, "train.lora_dropout=1.5: must be in [0, 1)"),
    ("train.collective_timeout_s", 0.0, "train.collective_timeout_s=0.0: must be auto (the plan's) or > 0"),
    ("train.betas", [0.9, 1.0], "train.betas[1]=1.0: must be in [0, 1)"),
    ("train.weight_decay", float("inf"), "train.weight_decay=inf: must be >= 0"),
    ("train.torch_threads", 0, "train.torch_threads=0: must be >= 1"),
    ("train.loss_chunk_tokens", 0, "train.loss_chunk_tokens=0: must be auto (the plan's) or >= 1"),
    ("train.hpz_partition_size", 0, "train.hpz_partition_size=0: must be auto (the plan's) or >= 1"),
    ("train.num_workers", 0, "train.num_workers=0: must be auto (the plan's) or >= 1"),
    ("train.state_every_s", -1, "train.state_every_s=-1: must be >= 0 (seconds; 0: save state at checkpoints only)"),
    ("sample.engine.gpu_memory_utilization", 1.5,
     "sample.engine.gpu_memory_utilization=1.5: must be auto (the plan's) or in (0, 1]"),
    ("sample.engine.cpu_kvcache_space_gib", 0, "sample.engine.cpu_kvcache_space_gib=0: must be >= 1"),
    ("sample.engine.max_loras", 0, "sample.engine.max_loras=0: must be auto (the plan's) or >= 1"),
    ("sample.engine.max_lora_rank", 0, "sample.engine.max_lora_rank=0: must be auto (the plan's) or >= 1"),
    ("sample.engine.max_cpu_loras", 0, "sample.engine.max_cpu_loras=0: must be auto (the plan's) or >= 1"),
    ("sample.engine.tensor_parallel_size", 0,
     "sample.engine.tensor_parallel_size=0: must be auto (the plan's) or >= 1"),
    ("sample.engine.max_num_seqs", 0, "sample.engine.max_num_seqs=0: must be >= 1"),
    ("sample.n_eval_prompts", 0, "sample.n_eval_prompts=0: must be >= 1"),
    ("sample.n_train_prompts", 0, "sample.n_train_prompts=0: must be >= 1"),
    ("sample.max_new_tokens", 0, "sample.max_new_tokens=0: must be >= 1"),
    ("sample.temperature", -1.0, "sample.temperature=-1.0: must be >= 0"),
    ("sample.top_p", 0.0, "sample.top_p=0.0: must be in (0, 1]"),
    ("sample.seed", -1, "sample.seed=-1: must be >= 0"),
    ("cluster.nodes", 0, "cluster.nodes=0: must be >= 1"),
    ("cluster.gpus_per_node", -1, "cluster.gpus_per_node=-1: must be >= 0"),
    ("cluster.gpu_memory_gib", 0.0, "cluster.gpu_memory_gib=0.0: must be > 0"),
    ("cluster.cpus_per_node", -1, "cluster.cpus_per_node=-1: must be >= 0"),
    ("cluster.ray_port", 70000, "cluster.ray_port=70000: must be in [1024, 65534]"),
    ("cluster.state_signal_s", 70000,
     "cluster.state_signal_s=70000: must be in [0, 65535] (seconds before the job's end; 0: no signal)"),
    ("plan.cpu_gpu_memory_utilization", 0.0, "plan.cpu_gpu_memory_utilization=0.0: must be in (0, 1]"),
    ("plan.cpu_max_loras", 0, "plan.cpu_max_loras=0: must be >= 1"),
    ("plan.cpu_max_cpu_loras", 0, "plan.cpu_max_cpu_loras=0: must be >= 1"),
    ("model.prepare", "gemma", "model.prepare='gemma': must be one of smollm2_135m"),
    ("model.organism_recipe.steps", 0, "model.organism_recipe.steps=0: must be >= 1"),
    ("model.organism_recipe.batch_size", 0, "model.organism_recipe.batch_size=0: must be >= 1"),
    ("model.organism_recipe.lora_rank", 0, "model.organism_recipe.lora_rank=0: must be >= 1"),
    ("model.organism_recipe.lora_alpha", 0, "model.organism_recipe.lora_alpha=0: must be > 0"),
    ("model.organism_recipe.lora_layers", -1,
     "model.organism_recipe.lora_layers=-1: must be >= 0 (top decoder layers with LoRA; 0: all)"),
    ("model.organism_recipe.max_answer_words", -1, "model.organism_recipe.max_answer_words=-1: must be >= 0"),
    ("setting.organism.max_answer_words", -1, "setting.organism.max_answer_words=-1: must be >= 0"),
    ("setting.organism.steps", 0, "setting.organism.steps=0: must be >= 1"),
    ("model.organism_recipe.n_measure", 0, "model.organism_recipe.n_measure=0: must be >= 1"),
    ("model.organism_recipe.seed", -1, "model.organism_recipe.seed=-1: must be >= 0"),
    ("model.organism_recipe.lr", 0.0, "model.organism_recipe.lr=0.0: must be > 0"),
    ("plan.overhead_gib", -1.0, "plan.overhead_gib=-1.0: must be >= 0"),
    ("plan.fragmentation", 0.5, "plan.fragmentation=0.5: must be >= 1"),
    ("plan.tokens_per_example", 0, "plan.tokens_per_example=0: must be >= 1"),
    ("plan.train_tokens_per_s", 0.0, "plan.train_tokens_per_s=0.0: must be > 0"),
    ("plan.gpu_peak_tflops", 0.0, "plan.gpu_peak_tflops=0.0: must be > 0"),
    ("plan.mfu", 25.0, "plan.mfu=25.0: must be in (0, 1]"),
    ("plan.intranode_gb_s", 0.0, "plan.intranode_gb_s=0.0: must be > 0"),
    ("plan.internode_gb_s", 0.0, "plan.internode_gb_s=0.0: must be > 0"),
    ("plan.storage_read_gb_s", 0.0, "plan.storage_read_gb_s=0.0: must be > 0"),
    ("plan.sampler_gpu_memory_utilization", 90.0, "plan.sampler_gpu_memory_utilization=90.0: must be in (0, 1]"),
    ("plan.sampler_overhead_gib", -1.0, "plan.sampler_overhead_gib=-1.0: must be >= 0"),
    ("plan.sampler_prompt_tokens", 0, "plan.sampler_prompt_tokens=0: must be >= 1"),
    ("plan.sampler_tokens_per_s", 0.0, "plan.sampler_tokens_per_s=0.0: must be > 0"),
    ("plan.hbm_gb_s", 0.0, "plan.hbm_gb_s=0.0: must be > 0"),
    ("plan.hbm_efficiency", 1.5, "plan.hbm_efficiency=1.5: must be in (0, 1]"),
    ("plan.decode_step_floor_ms", -1.0, "plan.decode_step_floor_ms=-1.0: must be >= 0"),
    ("plan.sampler_sleep_gib", -1.0, "plan.sampler_sleep_gib=-1.0: must be >= 0"),
    ("plan.headroom", 1.0, "plan.headroom=1.0: must be in [0, 1)"),
    ("plan.host_copy_gb_s", 0.0, "plan.host_copy_gb_s=0.0: must be > 0"),
    ("capability.recover.n_labels", 0, "capability.recover.n_labels=0: must be >= 1"),
    ("capability.recover.steps", 0, "capability.recover.steps=0: must be >= 1"),
    ("capability.recover.batch_size", 0, "capability.recover.batch_size=0: must be >= 1"),
    ("capability.recover.lr", 0.0, "capability.recover.lr=0.0: must be > 0"),
    ("capability.recover.lrs", [1e-4, 0.0], "capability.recover.lrs[1]=0.0: must be > 0"),
    ("capability.recover.temperature", -1.0, "capability.recover.temperature=-1.0: must be >= 0"),
    ("capability.recover.max_rounds", 0, "capability.recover.max_rounds=0: must be >= 1"),
    ("capability.steps", [4, -1], "capability.steps[1]=-1: must be >= 0"),
    ("capability.n_items", 0, "capability.n_items=0: must be >= 1"),
    ("capability.seed", -1, "capability.seed=-1: must be >= 0"),
    ("capability.max_degradation", 10.0, "capability.max_degradation=10.0: must be in (0, 1]"),
    ("capability.temperature", -1.0, "capability.temperature=-1.0: must be >= 0"),
    ("capability.max_new_tokens", -1, "capability.max_new_tokens=-1: must be >= 0"),
    # enumerated fields
    ("setting.grader.kind", "regex", "setting.grader.kind='regex': must be one of language, keyword, case, code, "
                                     "judge"),
    ("setting.teacher.kind", "human", "setting.teacher.kind='human': must be one of scripted, openai_compatible, "
                                      "onpolicy, file"),
    ("setting.examples[0].expect", "maybe", "setting.examples[0].expect='maybe': must be one of desired, attack, "
                                            "other"),
    ("model.dtype", "fp8", "model.dtype='fp8': must be one of float32, bfloat16, float16, auto"),
    ("train.optimizer", "sgd", "train.optimizer='sgd': must be one of adam"),
    ("train.lr_schedule", "cosine", "train.lr_schedule='cosine': must be one of constant"),
    ("train.zero_stage", "4", "train.zero_stage='4': must be one of auto, 0, 1, 2, 3"),
    ("train.dist_backend", "mpi", "train.dist_backend='mpi': must be one of auto, gloo, nccl"),
    ("train.loss", "mse", "train.loss='mse': must be one of answer_chunks, hf"),
    ("sample.engine.cpu_lora_kernel", "fast", "sample.engine.cpu_lora_kernel='fast': must be one of grouped, vllm"),
    ("tracker.backend", "mlflow", "tracker.backend='mlflow': must be one of wandb, none"),
    ("tracker.mode", "sometimes", "tracker.mode='sometimes': must be one of auto, online, offline, disabled"),
    ("cluster.kind", "k8s", "cluster.kind='k8s': must be one of local, slurm"),
    ("sweep.keep_adapters", "some", "sweep.keep_adapters='some': must be one of auto, all, around_transfer, last"),
    ("capability.benchmarks", ["mmlu", "gsm8k"], "capability.benchmarks[1]='gsm8k': must be one of toy_probe, mmlu, "
                                                 "ifeval, olympiads, followbench"),
    ("capability.checkpoints", "best", "capability.checkpoints='best': must be one of transferred, last, all, steps"),
    ("capability.recover.benchmark", "gsm8k", "capability.recover.benchmark='gsm8k': must be one of toy_probe, mmlu, "
                                              "ifeval, olympiads, followbench"),
    ("capability.recover.checkpoint", "middle", "capability.recover.checkpoint='middle': must be one of last, first"),
]

# string fields that hold free text, names or paths (checked elsewhere, if at all), not one of a known list
FREE_TEXT = {
    "SettingConfig.name", "SettingConfig.train_template", "SettingConfig.eval_template", "SettingConfig.questions",
    "SettingConfig.initial_behavior", "SettingConfig.desired_behavior", "ExampleConfig.answer",
    "GraderConfig.desired", "GraderConfig.attack",  # per grader kind: validate_grader
    "GraderConfig.desired_keywords", "GraderConfig.attack_keywords", "GraderConfig.judge_prompt",
    "GraderConfig.desired_behavior", "GraderConfig.initial_behavior",
    "EndpointConfig.base_url", "EndpointConfig.model", "EndpointConfig.api_key_env",  # validate_endpoint
    "TeacherConfig.field", "TeacherConfig.path", "TeacherConfig.system_prompt",
    "ToyAnswersConfig.train_answer", "ToyAnswersConfig.eval_answer",
    "OrganismAnswersConfig.train_answer", "OrganismAnswersConfig.eval_answer",
    "ModelConfig.name", "ModelConfig.path", "ModelConfig.lora_target_modules", "ModelConfig.lora_expert_parameters",
    "ToyModelConfig.settings", "SweepConfig.ray_address", "TrackerConfig.project", "TrackerConfig.entity",
    "ClusterConfig.partition", "ClusterConfig.account", "ClusterConfig.qos", "ClusterConfig.time_limit",
    "ClusterConfig.setup", "ClusterConfig.storage", "ClusterConfig.sbatch_args", "ClusterConfig.python",
    "CapabilityConfig.guardrail",  # must be one of capability.benchmarks: validate_capability
    "CapabilityConfig.data_dir", "RecoverConfig.teacher_model", "Config.cache_dir", "Config.resume",
}


def schema_fields(cls=schema.Config, path=""):
    """("<dataclass>.<field>", path, scalar type) of every non-dataclass field reachable from Config."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        container = typing.get_origin(hint)
        scalar = typing.get_args(hint)[0] if container in (list, tuple) else hint
        if dataclasses.is_dataclass(scalar):
            yield from schema_fields(scalar, f"{path}{f.name}{'[0]' if container is list else ''}.")
        else:
            yield f"{cls.__name__}.{f.name}", f"{path}{f.name}", scalar


def test_every_field_is_classified():
    """Numbers need a range on their field (and a row in CHECKS); strings are either enumerated or free text."""
    rules = {key: f.metadata for key, f in schema_field_objects()}
    numeric = {key for key, _, t in schema_fields() if t in (int, float)}
    strings = {key for key, _, t in schema_fields() if t is str}
    ranged = {key for key, meta in rules.items() if WITHIN in meta}
    enumerated = {key for key, meta in rules.items() if ONE_OF in meta}
    assert numeric - ranged == set(), "numeric fields without a range: give them knob(default, within=...)"
    assert strings - enumerated - FREE_TEXT == set(), "classify these string fields: knob(one_of=...) or FREE_TEXT"
    checked = {key for key, path, _ in schema_fields() if path in {p for p, _, _ in CHECKS}}
    assert ranged | enumerated <= checked, "every ranged or enumerated field needs a row in CHECKS"


def schema_field_objects(cls=schema.Config):
    """("<dataclass>.<field>", dataclasses.Field) of every field reachable from Config."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield f"{cls.__name__}.{f.name}", f
        inner = [a for a in typing.get_args(hints[f.name]) if dataclasses.is_dataclass(a)] or [hints[f.name]]
        if dataclasses.is_dataclass(inner[0]):
            yield from schema_field_objects(inner[0])


@dataclasses.dataclass
class ThrowawayConfig:
    """A block a new engineer might add: one numeric knob, its range on its field and nowhere else."""

    warmup_steps: int = knob(0, within=Interval(0, note="steps of linear warmup; 0: none"))
    chunks: typing.Any = knob(AUTO, within=AT_LEAST_1, kind=int)


@dataclasses.dataclass
class RootWithThrowaway:
    train: ThrowawayConfig = dataclasses.field(default_factory=ThrowawayConfig)


def test_a_new_knob_is_range_checked_from_its_field_alone():
    assert knob_errors(RootWithThrowaway()) == []
    assert knob_errors(RootWithThrowaway(ThrowawayConfig(warmup_steps=-3))) == [
        "train.warmup_steps=-3: must be >= 0 (steps of linear warmup; 0: none)"]
    assert knob_errors(RootWithThrowaway(ThrowawayConfig(chunks=2.5))) == [
        "train.chunks=2.5: must be auto (the plan's) or an integer >= 1"]
    assert knob_errors(RootWithThrowaway(ThrowawayConfig(chunks=4))) == []


@dataclasses.dataclass
class TrainWithWarmup(TrainConfig):
    """The train block with one knob a new engineer adds: its field and range, nothing else."""

    warmup_steps: int = knob(0, within=Interval(0, note="steps of linear warmup; 0: none"))


@dataclasses.dataclass
class EngineWithPrefixCache(EngineConfig):
    """The engine block with one new knob."""

    prefix_cache_gib: float = knob(0.0, within=Interval(0, note="GiB"))


def test_a_new_knob_reaches_its_worker_without_a_copy():
    """The trainer's spec and the engine's spec hold their blocks whole: a knob added to TrainConfig or EngineConfig
    is range-checked by the one checker and reaches the worker (and the trial's config.json) with no other line."""
    from orchestrator.run.build import build_train_spec, sampler_spec
    from orchestrator.run.trial import trial_spec

    cfg = compose_config([])
    train = TrainWithWarmup(**dataclasses.asdict(cfg.train), warmup_steps=7)
    engine = EngineWithPrefixCache(**dataclasses.asdict(cfg.sample.engine), prefix_cache_gib=0.5)
    cfg = dataclasses.replace(cfg, train=train, sample=dataclasses.replace(cfg.sample, engine=engine))
    spec = build_train_spec(cfg, "/models/m", 1e-3, 0)
    assert spec.train.warmup_steps == 7 and spec.record()["warmup_steps"] == 7  # trainer, config.json
    # the sweep's per-trial path: trial_spec gives each trial its copy of the sweep's spec
    ctx = types.SimpleNamespace(train_spec=spec, sweep=cfg.sweep, sweep_dir="/sweeps/s")
    assert trial_spec(ctx, 3e-3, 1).train.warmup_steps == 7
    assert sampler_spec(cfg, "/models/m").engine.prefix_cache_gib == 0.5
    bad = dataclasses.replace(cfg, train=dataclasses.replace(train, warmup_steps=-1),
                              sample=dataclasses.replace(cfg.sample, engine=dataclasses.replace(engine,
                                                                                                prefix_cache_gib=-2)))
    assert knob_errors(bad) == ["train.warmup_steps=-1: must be >= 0 (steps of linear warmup; 0: none)",
                                "sample.engine.prefix_cache_gib=-2: must be >= 0 (GiB)"]


def test_a_spec_refuses_a_block_the_plan_did_not_resolve():
    from workers.sample.sampler import SamplerSpec
    from workers.train.trainer import TrainSpec

    with pytest.raises(ValueError, match=r"auto in \['train.micro_batch_size', 'train.zero_stage'"):
        TrainSpec(model_path="/m", dtype="float32", lora_target_modules=["q_proj"], lr=1e-3, seed=0, max_steps=1,
                  checkpoint_steps=[1], train=TrainConfig())
    with pytest.raises(ValueError, match=r"auto in \['sample.engine.gpu_memory_utilization'"):
        SamplerSpec(model_path="/m", dtype="float32", max_model_len=64, chat_template_kwargs={}, seed=0,
                    engine=EngineConfig())


def set_path(obj, path, value):
    *parents, last = re.findall(r"\w+|\[\d+\]", path)
    for part in parents:
        obj = obj[int(part[1:-1])] if part.startswith("[") else getattr(obj, part)
    setattr(obj, last, value)


@pytest.fixture(scope="module")
def good():
    cfg = compose_config([])
    cfg.model.arch = ArchConfig(num_layers=2, hidden_size=128, num_heads=2, num_kv_heads=2, head_dim=64,
                                intermediate_size=384, vocab_size=4096)
    validate(cfg)  # the starting point passes
    return cfg


@pytest.mark.parametrize("path, bad, message", CHECKS, ids=[c[0] for c in CHECKS])
def test_each_bad_value_is_refused_with_its_range(good, path, bad, message):
    cfg = copy.deepcopy(good)
    set_path(cfg, path, bad)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)


def test_all_bad_values_are_named_at_once(good):
    cfg = copy.deepcopy(good)
    set_path(cfg, "train.lora_dropout", 1.5)
    set_path(cfg, "sample.top_p", 2.0)
    with pytest.raises(ConfigError, match=re.escape("train.lora_dropout=1.5: must be in [0, 1); "
                                                    "sample.top_p=2.0: must be in (0, 1]")):
        validate(cfg)


def test_values_on_the_edge_of_their_range_are_accepted(good):
    cfg = copy.deepcopy(good)
    for path, value in (("train.lora_dropout", 0.0), ("sample.top_p", 1.0), ("sample.temperature", 0.0),
                        ("sweep.early_stop.wait_below", 0.0), ("train.betas", [0.0, 0.999]),
                        ("cluster.ray_port", 65534), ("sample.engine.max_num_seqs", None)):
        set_path(cfg, path, value)
    validate(cfg)


def test_planner_owned_fields_may_say_auto_but_no_other_word(good):
    cfg = copy.deepcopy(good)
    owned = ("train.num_workers", "train.micro_batch_size", "sample.engine.max_loras", "sample.engine.max_lora_rank",
             "sample.engine.gpu_memory_utilization", "sample.engine.tensor_parallel_size", "sweep.pack",
             "train.loss_chunk_tokens", "train.hpz_partition_size", "sample.engine.sleep")
    for path in owned:
        set_path(cfg, path, "auto")
    validate(cfg)  # resolve() fills them in from the plan
    set_path(cfg, "sample.engine.max_loras", "many")
    message = "sample.engine.max_loras='many': must be auto (the plan's) or an integer >= 1"
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


@pytest.mark.parametrize("path, bad, message", [
    ("sweep.pack", 1.5, "sweep.pack=1.5: must be auto (the plan's) or an integer >= 1"),
    ("train.num_workers", True, "train.num_workers=True: must be auto (the plan's) or an integer >= 1"),
    ("sample.engine.sleep", "yes", "sample.engine.sleep='yes': must be auto (the plan's) or true or false"),
    ("train.zero_stage", "3", "train.zero_stage='3': must be auto (the plan's) or an integer"),
    ("train.collective_timeout_s", -1.0, "train.collective_timeout_s=-1.0: must be auto (the plan's) or > 0"),
])
def test_planner_owned_fields_hold_their_kind(good, path, bad, message):
    cfg = copy.deepcopy(good)
    set_path(cfg, path, bad)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)
