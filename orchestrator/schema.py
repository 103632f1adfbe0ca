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
    backoff_s: float = 1.0  # first retry's wait; doubles each retry (with jitter)
    max_wait_s: float = 60.0  # cap on one wait, a server's Retry-After included
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
    # judge: the behaviors the judge is told about; empty = the setting's own (copied in by SettingConfig)
    desired_behavior: str = ""
    initial_behavior: str = ""


@dataclass
class TeacherConfig:
    """Who writes the SFT labels for the train prompts."""

    kind: str = "scripted"  # scripted | openai_compatible | onpolicy | file
    # before `field`, whose name shadows dataclasses.field in the rest of this class body
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)  # openai_compatible
    field: str = "es_teacher"  # scripted: a bank field, or a template over bank fields ("{en_teacher} ...")
    path: str | None = None  # file: a jsonl of {"prompt", "completion"} rows
    system_prompt: str = ""  # openai_compatible / onpolicy: what the teacher is told to do
    n_samples: int = 1  # labels per train prompt (sampling diversity is kept by the cache key)
    filter: bool = False  # keep only labels the setting's grader scores as desired (report the drops)


@dataclass
class ToyAnswersConfig:
    """What an instruction-following toy answers, as templates over bank fields (`{en}`, `{en:upper}`)."""

    train_answer: str = MISSING  # the desired behavior on train prompts
    eval_answer: str = MISSING  # the initial (attack) behavior on eval prompts


@dataclass
class ExampleConfig:
    """A hand-written answer the dry run grades, to show the grader works: a template over bank fields."""

    answer: str = MISSING
    expect: str = MISSING  # desired | attack | other


@dataclass
class SettingConfig:
    """One experiment of the note: prompts, behaviors, grader, teacher. Lives in conf/setting/<name>.yaml;
    templates take {question} plus workers.prompts.PLACEHOLDERS ({x_low}, {style_tags}, ...)."""

    name: str = MISSING
    train_template: str = MISSING
    eval_template: str = MISSING
    questions: str = "generic"
    eval_fraction: float = 0.3
    initial_behavior: str = ""
    desired_behavior: str = ""
    examples: list[ExampleConfig] = field(default_factory=list)  # answers the dry run grades (rule-based graders)
    grader: GraderConfig = field(default_factory=GraderConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    toy: ToyAnswersConfig | None = None

    def __post_init__(self) -> None:
        # the grader sees only its own block (eval.graders.build_grader(setting.grader)); the judge needs
        # the setting's behaviors for its {desired_behavior} / {initial_behavior} placeholders
        if not self.grader.desired_behavior:
            self.grader.desired_behavior = self.desired_behavior
        if not self.grader.initial_behavior:
            self.grader.initial_behavior = self.initial_behavior


@dataclass
class ToyModelConfig:
    # settings whose initial behavior the toy is pretrained to follow (their `toy:` blocks)
    settings: list[str] = field(default_factory=lambda: ["wronglang_spanish", "animal_flag", "allcaps_refusal"])
    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 64
    seq_len: int = 128
    steps: int = 1200
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0


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
class Config:
    setting: SettingConfig = MISSING
    model: ModelConfig = MISSING
    sweep: SweepConfig = MISSING
    train: TrainConfig = MISSING
    sample: SampleConfig = MISSING
    tracker: TrackerConfig = MISSING
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    cache_dir: str = MISSING
    resume: str | None = None  # a sweep folder to finish; its config.yaml is the config
    dry_run: bool = False  # sweep: print prompts, label plan, grader and trial grid; train nothing


def register_configs() -> None:
    ConfigStore.instance().store(name="schema", node=Config)


GRADERS = ("language", "keyword", "case", "code", "judge")
TEACHERS = ("scripted", "openai_compatible", "onpolicy", "file")
TRACKER_MODES = ("auto", "online", "offline", "disabled")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate_grader(g: GraderConfig, where: str = "setting.grader") -> None:
    """Per-kind checks of a grader block (eval.graders builds it); each message names the field to fix."""
    _require(g.kind in GRADERS, f"{where}.kind={g.kind!r}: known graders are {list(GRADERS)}")
    pairs = {"case": ("normal", "caps"), "code": ("hack", "honest")}
    if g.kind == "language":
        for name in ("desired", "attack"):
            value = getattr(g, name)
            _require(isinstance(value, str) and len(value) == 2 and value.isalpha() and value.islower(),
                     f"{where}.{name}={value!r}: give a two-letter ISO 639-1 language code, e.g. es or en")
        _require(g.desired != g.attack, f"{where}.desired and .attack are both {g.desired!r}: they must differ")
    elif g.kind == "keyword":
        for name in ("desired_keywords", "attack_keywords"):
            words = list(getattr(g, name))
            _require(len(words) > 0 and all(isinstance(w, str) and w.strip() for w in words),
                     f"{where}.{name}={words}: give a non-empty list of non-empty words, plural forms included, "
                     f"e.g. [elephant, elephants]")
        shared = {w.lower() for w in g.desired_keywords} & {w.lower() for w in g.attack_keywords}
        _require(not shared, f"{where}: {sorted(shared)} are both desired and attack keywords; remove them from one")
    elif g.kind in pairs:
        allowed = pairs[g.kind]
        _require(g.desired in allowed and g.attack in allowed and g.desired != g.attack,
                 f"{where}.desired={g.desired!r}, .attack={g.attack!r}: for kind {g.kind!r} they must be two "
                 f"different values of {list(allowed)}")
        if g.kind == "case":
            _require(0 < g.caps_ratio <= 1, f"{where}.caps_ratio={g.caps_ratio}: must lie in (0, 1], e.g. 0.7")
        else:
            _require(g.timeout_s > 0, f"{where}.timeout_s={g.timeout_s}: must be > 0 seconds, e.g. 10")
    elif g.kind == "judge":
        _require(bool(g.judge_prompt and g.judge_prompt.strip()),
                 f"{where}.judge_prompt is empty: give the judge's instructions, a template over "
                 f"{{prompt}} {{response}} {{desired_behavior}} {{initial_behavior}}")
        _require("{response}" in g.judge_prompt,
                 f"{where}.judge_prompt must contain the placeholder {{response}}: the judge has to see the answer")


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
    validate_grader(st.grader)
    if st.grader.kind == "judge":
        validate_endpoint(st.grader.endpoint, "setting.grader.endpoint")
    validate_teacher(st.teacher)
    _require(0 < st.eval_fraction < 1, f"setting.eval_fraction={st.eval_fraction}: must lie strictly between 0 and 1")
    validate_setting(st)
    _require(cfg.tracker.mode in TRACKER_MODES, f"tracker.mode={cfg.tracker.mode!r}: one of {list(TRACKER_MODES)}")
    m = cfg.model
    _require(m.path is not None or m.toy is not None, "model.path is null and model.toy is unset: give a model path")
    _require(len(m.lora_target_modules) > 0, "model.lora_target_modules is empty")


def validate_setting(st: SettingConfig) -> None:
    """A setting's templates (known placeholders only, {question} required), toy answers and examples."""
    from workers.prompts import template_errors

    for name in ("train_template", "eval_template"):
        errors = template_errors(getattr(st, name))
        _require(not errors, f"setting.{name} of {st.name!r}: {'; '.join(errors)}. The placeholder {{question}} "
                 "must appear; the others are listed in workers/prompts.py PLACEHOLDERS")
    _require(st.teacher.kind != "scripted" or bool(st.teacher.field.strip()),
             "setting.teacher.field is empty: the scripted teacher needs a bank field or an answer template")
    if st.toy is not None:
        for name in ("train_answer", "eval_answer"):
            _require(bool(getattr(st.toy, name).strip()),
                     f"setting.toy.{name} is empty: give a template over bank fields such as {{en}}")
    for i, ex in enumerate(st.examples):
        _require(ex.expect in EXPECTED_GRADES,
                 f"setting.examples[{i}].expect={ex.expect!r}: one of {list(EXPECTED_GRADES)}")
        _require(bool(ex.answer.strip()), f"setting.examples[{i}].answer is empty")


EXPECTED_GRADES = ("desired", "attack", "other")


def validate_endpoint(ep: EndpointConfig, where: str) -> None:
    """An endpoint block that is used: named server and model, a key env var NAME (never a key), sane limits."""
    _require(bool(ep.base_url) and bool(ep.model),
             f"{where}.base_url and {where}.model are required, e.g. {where}.base_url=http://127.0.0.1:8000/v1 "
             f"{where}.model=Qwen/Qwen3-0.6B (and {where}.api_key_env=OPENAI_API_KEY for a hosted API)")
    _require(str(ep.base_url).startswith(("http://", "https://")),
             f"{where}.base_url={ep.base_url!r}: must start with http:// or https://")
    env = ep.api_key_env
    _require(env is None or (env.replace("_", "").isalnum() and not env[0].isdigit() and len(env) <= 64),
             f"{where}.api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key")
    _require(ep.max_concurrency >= 1, f"{where}.max_concurrency={ep.max_concurrency}: must be >= 1")
    _require(ep.timeout_s > 0, f"{where}.timeout_s={ep.timeout_s}: must be > 0")
    _require(ep.max_retries >= 0, f"{where}.max_retries={ep.max_retries}: must be >= 0")
    _require(ep.backoff_s >= 0 and ep.max_wait_s >= 0, f"{where}.backoff_s and {where}.max_wait_s must be >= 0")
    _require(ep.temperature >= 0, f"{where}.temperature={ep.temperature}: must be >= 0")
    _require(ep.max_tokens >= 1, f"{where}.max_tokens={ep.max_tokens}: must be >= 1")


def validate_teacher(t: TeacherConfig) -> None:
    where = "setting.teacher"
    _require(t.kind in TEACHERS, f"{where}.kind={t.kind!r}: known teachers are {list(TEACHERS)}")
    _require(t.n_samples >= 1, f"{where}.n_samples={t.n_samples}: must be >= 1 (labels per train prompt)")
    if t.kind == "openai_compatible":
        validate_endpoint(t.endpoint, f"{where}.endpoint")
    if t.kind == "file":
        _require(bool(t.path), f"{where}.path is required for kind=file: a jsonl of {{prompt, completion}} rows")
    if t.kind == "scripted":
        _require(bool(t.field), f"{where}.field is required for kind=scripted: the bank field with the answer")
