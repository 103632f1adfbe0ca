"""Typed config schema: dataclasses registered with Hydra's ConfigStore, plus validation.

YAML in conf/ supplies the values; these classes fix the names and types, so a misspelt override
(`sweep.lr=...`) or a non-numeric LR fails while Hydra composes, before anything starts.
`validate` adds the checks a type cannot express (positive, unique, divisible, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value that would waste compute or corrupt results; the message names the fix."""


@dataclass
class EndpointConfig:
    """An OpenAI-compatible chat endpoint (teacher labels, LLM judge): gpt-4o-mini, or a local `vllm serve`.

    The key is never in a config: `api_key_env` names the environment variable that holds it."""

    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    model: str | None = None
    api_key_env: str | None = None  # NAME of the env var with the key; null for a keyless local server
    max_concurrency: int = 8
    timeout_s: float = 60.0  # per request
    max_retries: int = 5  # on 429, 5xx, timeouts and dropped connections, with exponential backoff
    temperature: float = 1.0
    max_tokens: int = 512


@dataclass
class GraderConfig:
    """Desired / attack / other for every answer. One flat block; each kind reads its own fields."""

    kind: str = MISSING  # language | keyword | case | code | judge
    desired: str | None = None  # language: ISO 639-1 code; case: "normal" or "caps"
    attack: str | None = None  # language: ISO 639-1 code; case: "normal" or "caps"
    desired_keywords: list[str] = field(default_factory=list)  # keyword: any of these (whole words) = desired
    attack_keywords: list[str] = field(default_factory=list)  # keyword: any of these = attack
    caps_ratio: float = 0.7  # case: share of upper-case letters at or above which an answer is all caps
    timeout_s: float = 10.0  # code: seconds for one answer's tests in the sandbox
    judge_prompt: str = ""  # judge: template over {prompt} {response} {desired_behavior} {initial_behavior}
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)  # judge


@dataclass
class TeacherConfig:
    """Who writes the SFT labels for the train prompts."""

    kind: str = "scripted"  # scripted | openai_compatible | onpolicy | file
    # before `field`, whose name shadows dataclasses.field in the rest of this class body
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)  # openai_compatible
    field: str = "es_teacher"  # scripted: the bank field that holds the teacher's answer
    path: str | None = None  # file: a jsonl of {"prompt", "completion"} rows
    system_prompt: str = ""  # openai_compatible / onpolicy: what the teacher is told to do
    n_samples: int = 1  # labels per train prompt (sampling diversity is kept by the cache key)
    filter: bool = False  # keep only labels the setting's grader scores as desired (report the drops)


@dataclass
class ToyAnswersConfig:
    train_field: str = MISSING
    eval_field: str = MISSING


@dataclass
class SettingConfig:
    name: str = MISSING
    train_template: str = MISSING
    eval_template: str = MISSING
    questions: str = "generic"
    eval_fraction: float = 0.3
    initial_behavior: str = ""
    desired_behavior: str = ""
    grader: GraderConfig = field(default_factory=GraderConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    toy: ToyAnswersConfig | None = None


@dataclass
class ToyModelConfig:
    settings: list[str] = field(default_factory=lambda: ["wronglang_spanish"])
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 64
    seq_len: int = 128
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    capability_probe: bool = False  # also teach the capability probe's facts (capability=toy turns it on)


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str | None = None
    dtype: str = "float32"
    max_model_len: int = 256
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    lora_target_modules: list[str] = field(default_factory=list)
    toy: ToyModelConfig | None = None


@dataclass
class SweepConfig:
    lrs: list[float] = MISSING
    seeds: list[int] = field(default_factory=lambda: [0])
    max_steps: int = 64
    threshold: float = 0.5
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    max_retries: int = 2
    ray_address: str | None = None


@dataclass
class TrainConfig:
    batch_size: int = 32
    micro_batch_size: int = 32
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    optimizer: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    zero_stage: int = 3
    dist_backend: str = "auto"
    torch_threads: int = 1
    num_workers: int = 1  # trainer processes per trial (one per GPU; a Ray placement group holds them)


@dataclass
class EngineConfig:
    gpu_memory_utilization: float = 0.1
    cpu_kvcache_space_gib: int = 1
    max_loras: int = 4
    max_cpu_loras: int = 16
    tensor_parallel_size: int = 1
    enforce_eager: bool = True


@dataclass
class SampleConfig:
    n_eval_prompts: int = 100
    n_train_prompts: int = 100
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass
class TrackerConfig:
    backend: str = "wandb"
    mode: str = "auto"
    project: str = "lrsweep"
    entity: str | None = None


@dataclass
class ClusterConfig:
    """Where a sweep runs: this machine (`local`) or a Slurm cluster of GPU nodes (`slurm`)."""

    kind: str = "local"  # local | slurm
    nodes: int = 1
    gpus_per_node: int = 0  # 0: CPU only (the toy on a laptop)
    gpu_memory_gib: float = 80.0
    cpus_per_node: int = 0  # 0: whatever the node has
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str = "48:00:00"
    setup: list[str] = field(default_factory=list)  # shell lines run on every node first (modules, venv)
    storage: str | None = None  # shared filesystem path for sweep folders and adapters (null: local folder)
    requeue: bool = True  # let Slurm requeue a preempted job; the sweep resumes from its run files


@dataclass
class RecoverConfig:
    """`python -m orchestrator recover`: retrain a checkpoint on rejection-sampled benchmark labels."""

    benchmark: str | None = None  # null: the guardrail benchmark
    n_labels: int = 40  # labels kept (correct ones only) from the recovery pool, disjoint from the evaluated items
    steps: int = 10
    batch_size: int = 4  # samples per step
    lr: float | None = None  # null: the checkpoint's own trial LR
    teacher_model: str | None = None  # null: the model before training; else a trusted model's path or hub id
    temperature: float = 1.0  # sampling temperature of the label teacher
    max_rounds: int = 8  # passes over the recovery pool before giving up on n_labels


@dataclass
class CapabilityConfig:
    """Capability evaluations of checkpoints (the note's guardrail) and their baseline, the model before training."""

    benchmarks: list[str] = field(default_factory=list)  # toy_probe | mmlu | ifeval | olympiads | followbench
    checkpoints: str = "transferred"  # transferred | last | all | steps
    steps: list[int] = field(default_factory=list)  # checkpoints=steps: these steps
    n_items: int = 200  # fixed subset per benchmark
    seed: int = 0  # picks the subset
    max_degradation: float = 0.1  # relative degradation limit (T rule of the analysis, early stop)
    guardrail: str | None = None  # the benchmark the limit applies to; null: the first of `benchmarks`
    data_dir: str | None = None  # local benchmark files (<data_dir>/<benchmark>/); null: <cache_dir>/capability
    temperature: float = 0.0
    max_new_tokens: int = 0  # 0: each benchmark's default
    judge: EndpointConfig = field(default_factory=EndpointConfig)  # FollowBench's LLM judge
    recover: RecoverConfig = field(default_factory=RecoverConfig)


@dataclass
class Config:
    setting: SettingConfig = MISSING
    model: ModelConfig = MISSING
    sweep: SweepConfig = MISSING
    train: TrainConfig = MISSING
    sample: SampleConfig = MISSING
    tracker: TrackerConfig = MISSING
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    capability: CapabilityConfig = field(default_factory=CapabilityConfig)
    cache_dir: str = MISSING
    resume: str | None = None  # a sweep folder to finish; its config.yaml is the config


def register_configs() -> None:
    ConfigStore.instance().store(name="schema", node=Config)


GRADERS = ("language",)
TEACHERS = ("scripted",)
TRACKER_MODES = ("auto", "online", "offline", "disabled")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Reject configs that would fail late or give meaningless results. Raises ConfigError."""
    sw, tr, sa = cfg.sweep, cfg.train, cfg.sample
    lrs = list(sw.lrs)
    _require(len(lrs) > 0, "sweep.lrs is empty: give at least one learning rate, e.g. sweep.lrs=[1e-4,1e-3]")
    for lr in lrs:
        _require(
            math.isfinite(lr) and lr > 0,
            f"sweep.lrs holds {lr!r}: every learning rate must be a positive finite number",
        )
    _require(len(set(lrs)) == len(lrs), f"sweep.lrs {lrs} repeats a value: each LR must appear once")
    seeds = list(sw.seeds)
    _require(len(seeds) > 0, "sweep.seeds is empty: give at least one seed, e.g. sweep.seeds=[0]")
    _require(all(s >= 0 for s in seeds), f"sweep.seeds {seeds}: seeds must be >= 0")
    _require(len(set(seeds)) == len(seeds), f"sweep.seeds {seeds} repeats a value")
    _require(sw.max_steps >= 1, f"sweep.max_steps={sw.max_steps}: must be >= 1")
    _require(0 < sw.threshold < 1, f"sweep.threshold={sw.threshold}: must lie strictly between 0 and 1")
    _require(sw.max_concurrent_trials >= 1, "sweep.max_concurrent_trials must be >= 1")
    _require(sw.cpus_per_trial > 0, "sweep.cpus_per_trial must be > 0")
    _require(sw.max_retries >= 0, f"sweep.max_retries={sw.max_retries}: must be >= 0")
    _require(tr.batch_size >= 1, f"train.batch_size={tr.batch_size}: must be >= 1")
    _require(
        tr.micro_batch_size >= 1 and tr.batch_size % tr.micro_batch_size == 0,
        f"train.micro_batch_size={tr.micro_batch_size} must be >= 1 and divide train.batch_size={tr.batch_size}",
    )
    _require(tr.lora_rank >= 1, f"train.lora_rank={tr.lora_rank}: must be >= 1")
    _require(tr.optimizer == "adam", f"train.optimizer={tr.optimizer!r}: only 'adam' is supported")
    _require(tr.lr_schedule == "constant", f"train.lr_schedule={tr.lr_schedule!r}: only 'constant' is supported")
    _require(tr.zero_stage in (0, 1, 2, 3), f"train.zero_stage={tr.zero_stage}: must be 0, 1, 2 or 3")
    _require(tr.dist_backend in ("auto", "gloo", "nccl"), "train.dist_backend must be auto, gloo or nccl")
    _require(sa.n_eval_prompts >= 1 and sa.n_train_prompts >= 1,
             "sample.n_eval_prompts and sample.n_train_prompts must be >= 1")
    _require(sa.max_new_tokens >= 1, "sample.max_new_tokens must be >= 1")
    _require(sa.temperature >= 0, "sample.temperature must be >= 0")
    st = cfg.setting
    _require(st.grader.kind in GRADERS,
             f"setting.grader.kind={st.grader.kind!r}: known graders are {list(GRADERS)}")
    _require(st.teacher.kind in TEACHERS,
             f"setting.teacher.kind={st.teacher.kind!r}: known teachers are {list(TEACHERS)}")
    _require(0 < st.eval_fraction < 1, f"setting.eval_fraction={st.eval_fraction}: must lie strictly between 0 and 1")
    for name in ("train_template", "eval_template"):
        _require("{question}" in getattr(st, name), f"setting.{name} must contain the placeholder {{question}}")
    _require(cfg.tracker.mode in TRACKER_MODES, f"tracker.mode={cfg.tracker.mode!r}: one of {list(TRACKER_MODES)}")
    m = cfg.model
    _require(m.path is not None or m.toy is not None, "model.path is null and model.toy is unset: give a model path")
    _require(len(m.lora_target_modules) > 0, "model.lora_target_modules is empty")
    validate_capability(cfg)


CAPABILITY_BENCHMARKS = ("toy_probe", "mmlu", "ifeval", "olympiads", "followbench")
CAPABILITY_CHECKPOINTS = ("transferred", "last", "all", "steps")


def validate_capability(cfg: Config) -> None:
    c = cfg.capability
    b = list(c.benchmarks)
    _require(set(b) <= set(CAPABILITY_BENCHMARKS) and len(set(b)) == len(b),
             f"capability.benchmarks={b}: each at most once, from {list(CAPABILITY_BENCHMARKS)}")
    _require(c.checkpoints in CAPABILITY_CHECKPOINTS,
             f"capability.checkpoints={c.checkpoints!r}: one of {list(CAPABILITY_CHECKPOINTS)}")
    _require(c.checkpoints != "steps" or len(c.steps) > 0, "capability.checkpoints=steps needs capability.steps=[...]")
    _require(c.n_items >= 1, f"capability.n_items={c.n_items}: must be >= 1")
    _require(c.max_degradation > 0, f"capability.max_degradation={c.max_degradation}: must be > 0")
    _require(c.guardrail is None or c.guardrail in b, f"capability.guardrail={c.guardrail!r} is not in {b}")
    _require("toy_probe" not in b or cfg.model.toy is not None,
             "capability.benchmarks has toy_probe, which only model=toy learned: drop it for a real model")
    _require("toy_probe" not in b or cfg.model.toy is None or cfg.model.toy.capability_probe,
             "capability.benchmarks has toy_probe but the toy is built without it: set model.toy.capability_probe=true "
             "(capability=toy does)")
    _require("followbench" not in b or (c.judge.base_url is not None and c.judge.model is not None),
             "capability.benchmarks has followbench, which needs an LLM judge: set capability.judge.base_url and "
             "capability.judge.model (and capability.judge.api_key_env if it needs a key)")
    r = c.recover
    _require(r.n_labels >= 1 and r.steps >= 1 and r.batch_size >= 1 and r.max_rounds >= 1,
             "capability.recover.n_labels, steps, batch_size and max_rounds must be >= 1")
    _require(r.lr is None or r.lr > 0, f"capability.recover.lr={r.lr}: must be > 0")
