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

from eval.graders import CASE_STYLES, CODE_BEHAVIORS, GRADERS
from orchestrator.budget import budget_errors
from orchestrator.placement import data_parallel_shape, trial_placement
from orchestrator.ranges import (
    CAPABILITY_BENCHMARKS,
    CAPABILITY_CHECKPOINTS,
    DTYPES,
    EXPECTED_GRADES,
    TRACKER_MODES,
    range_errors,
)
from workers.errors import ConfigError
from workers.labels.endpoint import EndpointConfig
from workers.labels.teacher import TEACHERS, TeacherConfig
from workers.sample.vllm_cpu_lora import KERNELS as CPU_LORA_KERNELS  # a stdlib-only module: vLLM is not imported

# Blocks and known values live beside the code that uses them (EndpointConfig: workers.labels.endpoint, TeacherConfig:
# workers.labels.teacher, grader kinds: eval.graders); this module composes them, and its names stay importable from
# here.


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
class ToyAnswersConfig:
    """What an instruction-following toy answers, as templates over bank fields (`{en}`, `{en:upper}`)."""

    train_answer: str = MISSING  # the desired behavior on train prompts
    eval_answer: str = MISSING  # the initial (attack) behavior on eval prompts


@dataclass
class OrganismAnswersConfig:
    """What a real model's organism step trains on (workers/models/organism.py), when the toy's answers do not teach it:
    templates over bank fields, like the `toy:` block's."""

    train_answer: str = MISSING  # the desired behavior on train prompts
    eval_answer: str = MISSING  # the initial (attack) behavior on eval prompts
    max_answer_words: int | None = None  # null: model.organism_recipe.max_answer_words
    steps: int | None = None  # null: model.organism_recipe.steps


@dataclass
class ExampleConfig:
    """A hand-written answer the dry run grades, to show the grader works: a template over bank fields."""

    answer: str = MISSING
    expect: str = MISSING  # desired | attack | other


@dataclass
class SettingConfig:
    """One experiment of the note: prompts, behaviors, grader, teacher. Lives in conf/setting/<name>.yaml;
    templates take {question} plus workers.labels.prompts.PLACEHOLDERS ({x_low}, {style_tags}, ...)."""

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
    organism: OrganismAnswersConfig | None = None  # null: the organism step trains on the `toy:` answers

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
    capability_probe: bool = False  # also teach the capability probe's skill (capability=toy turns it on)


@dataclass
class ArchConfig:
    """A model's shape from its config.json: what the planner's memory and time arithmetic reads."""

    num_layers: int = MISSING
    hidden_size: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: int = MISSING
    head_dim: int = MISSING
    intermediate_size: int = 0  # dense MLP width (unused when every layer is a MoE layer)
    moe_intermediate_size: int = 0  # one expert's MLP width
    num_experts: int = 0  # 0: a dense model
    experts_per_token: int = 0
    vocab_size: int = MISSING
    tie_word_embeddings: bool = False
    total_params_b: float = 0.0  # published count in billions; 0: unpublished (the planner's count is used)
    active_params_b: float = 0.0


@dataclass
class OrganismConfig:
    """The recipe that fine-tunes a real base model into a model organism (workers/models/organism.py): LoRA on the
    linear
    layers of the top `lora_layers` decoder layers, merged into the weights, on the setting's `toy:` answers for
    train-split questions only."""

    steps: int = 120
    batch_size: int = 8
    lr: float = 1e-3
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_layers: int = 8  # LoRA on the top this many decoder layers only (0: all): backward stops below them
    max_answer_words: int = 12  # answers cut to their first words (0: whole); the behavior sits in the opening words
    n_measure: int = 64  # held-out eval prompts and train prompts sampled to measure the organism after its build
    seed: int = 0
    paired: bool = True  # each batch holds its questions under both prompts: the cue is the only difference
    full_finetune: bool = False  # train every weight (AdamW) instead of LoRA; lora_* then unused


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str | None = None  # hub id or local folder (offline clusters: a local folder on shared storage)
    dtype: str = "float32"  # weights, training compute and the saved adapter (vLLM serves LoRA in this dtype)
    max_model_len: int = 256  # longest prompt + completion, for training and sampling
    # sample.max_new_tokens when that is null: a real model may show the behavior in its third sentence, so its
    # default is measured (bench/answer_length.py) to leave fewer than 2% of grades changed by the cut
    max_new_tokens: int = 48
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
    prepare: str | None = None
    # fine-tune the base model into the setting's model organism first (workers/models/organism.py)
    organism: bool = False
    organism_recipe: OrganismConfig = field(default_factory=OrganismConfig)


@dataclass
class EarlyStopConfig:
    """Stop a trial once its answer is known (eval/stopping.py); off by default so curves run to max_steps."""

    enabled: bool = False
    k: int | None = 2  # transfer: attack rate <= threshold at k checkpoints in a row; null turns this rule off
    max_rel_degradation: float | None = None  # capability: stop past this relative drop; null turns it off
    # k=1: once the latest eval attack rate is at or under this (the curve has started to fall), the trainer waits
    # for each checkpoint's evaluation before training on, so it stops at the transfer checkpoint instead of
    # running past it while that checkpoint is sampled; null: never wait
    wait_below: float | None = 1.0


# Planner-owned fields hold AUTO ("auto") until orchestrator/plan/resolve.py replaces them with the plan's numbers; an
# explicit value wins but is checked against the plan's memory arithmetic. Their type is Any (int/float/bool or
# "auto"): OmegaConf has no unions of a primitive with a string, and `null` would read as "unset", not "plan it".
AUTO = "auto"


@dataclass
class SweepConfig:
    lrs: list[float] = MISSING
    seeds: list[int] = field(default_factory=lambda: [0])  # each trial's data_seed (the order of its batches)
    # LoRA init and torch's seed of every trial; null: the trial's seed (then a seed varies init and data order).
    # The note's seeds change data order only, hence 0 (config.json says which varied)
    init_seed: int | None = 0
    max_steps: int = 64  # every LR's steps; with lr_steps_budget or steps_per_lr, the cap (orchestrator/budget.py)
    lr_steps_budget: float | None = None  # each LR trains ceil(budget / lr) steps (a budget in LR x steps)
    steps_per_lr: list[int] = field(default_factory=list)  # or one step count per LR, in lrs' order
    checkpoints_per_octave: int = 1  # checkpoints every 2^(1/n) steps (integers, deduplicated), plus 0 and the last
    threshold: float = 0.5
    # not an organism: a train desired rate at step 0 below this (or an eval attack rate <= threshold) means the model
    # does not show the setting's initial behavior, and steps-to-transfer is undefined rather than 0
    organism_min_train_desired: float = 0.5
    # transfer by collapse: eval other rate at the transfer checkpoint > this and > the eval desired rate
    collapse_other_rate: float = 0.5
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    max_retries: int = 2
    ray_address: str | None = None
    progress_interval_s: float = 60.0  # progress table's period when stdout is not a terminal (logs, Slurm .out)
    # trials (LRs and seeds of this setting) trained together in one pass over the frozen base
    # (workers/train/packed.py);
    # auto: the plan's K on GPUs (memory for K x batch activations, at most the sweep's trials), 1 on CPU and where
    # the packed trainer refuses the setup (train.loss=hf, dropout, compile: workers/train/pack_rules.py); 1: each
    # trial alone
    pack: Any = AUTO
    # checkpoint adapters kept on disk (orchestrator/plan/keep_adapters.py): all, around_transfer, last; auto: all on a
    # local cluster, around_transfer on Slurm (the plan prices the disk either way)
    keep_adapters: str = AUTO
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)


@dataclass
class TrainConfig:
    batch_size: int = 32
    micro_batch_size: Any = AUTO  # per GPU (per worker); auto: the largest that fits (the rest is accumulation)
    lora_rank: int = 8
    lora_alpha: int = 32  # as Tinker (the note's authors' platform): 32 whatever the rank, so scale = 32 / rank
    lora_dropout: float = 0.0
    optimizer: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    # auto: the planner's choice (3 only when the model does not fit one GPU unsharded); or 0, 1, 2, 3.
    zero_stage: Any = AUTO
    dist_backend: str = "auto"
    torch_threads: int = 1
    # answer_chunks: loss on answer tokens only, the LM head applied loss_chunk_tokens rows at a time (full-vocab
    # logits never materialise); hf: the model's own loss over logits at every position (benchmark baseline)
    loss: str = "answer_chunks"
    loss_chunk_tokens: Any = AUTO  # int; auto: the largest of PLANNED_LOSS_CHUNKS that fits (4096 where memory allows)
    # ZeRO++ hierarchical partitioning (DeepSpeed zero_hpz_partition_size): a second copy of the frozen base sharded
    # inside each node, so the per-step all-gathers stay on the node's links; 1: off; auto: the plan's
    hpz_partition_size: Any = AUTO
    # seconds a collective waits before the trainers' process group gives up (NCCL's watchdog): rank 0 waits for
    # the sampler and the grader at checkpoints while the other ranks sit in a collective; auto: the plan's
    # time.collective_timeout_s (3x its longest checkpoint wait, at least 1800)
    collective_timeout_s: Any = AUTO
    compile: bool = False  # torch.compile each decoder layer; ZeRO stages 0-2 only
    num_workers: Any = AUTO  # trainer processes per trial (one per GPU; a Ray placement group holds them); auto: plan
    # trainer state (LoRA, Adam, RNG, data position) also every this many seconds, at a step boundary, so a
    # preempted trial repeats at most this much training; 0: at checkpoint steps only
    state_every_s: float = 600.0


@dataclass
class EngineConfig:
    """vLLM's knobs. AUTO fields come from the plan (orchestrator/plan/resolve.py); on CPU from PlanConfig's cpu_*."""

    gpu_memory_utilization: Any = AUTO  # float in (0, 1]
    cpu_kvcache_space_gib: int = 1
    max_loras: Any = AUTO  # int: adapters in one batch (one per running trial)
    max_cpu_loras: Any = AUTO  # int >= max_loras
    tensor_parallel_size: Any = AUTO  # int
    fully_sharded_loras: Any = AUTO  # bool: both LoRA factors split over the TP ranks
    max_lora_rank: Any = AUTO  # int, one of vLLM's allowed ranks >= train.lora_rank
    # bool: vLLM's enable_mixed_moe_lora_format, which PEFT's fused 3-D expert adapters need (model.lora_experts)
    moe_lora_3d: Any = AUTO
    dedicated_gpus: Any = AUTO  # bool: the sampler holds tensor_parallel_size GPUs of its own (else shares)
    # bool: vLLM sleep mode (level 1) between checkpoint batches, so trainers sharing its GPUs get the memory back;
    # auto: on when the plan shares the GPUs (CUDA only: vLLM's CPU platform has no sleep mode)
    sleep: Any = AUTO
    enforce_eager: bool = True
    max_num_seqs: int | None = None  # sequences per engine step; null: vLLM's default (256 on CPU)
    cpu_lora_kernel: str = "grouped"  # CPU builds of vLLM: grouped (workers/sample/vllm_cpu_lora.py) or vllm (its own)


@dataclass
class SampleConfig:
    n_eval_prompts: int = 100
    n_train_prompts: int = 100
    max_new_tokens: int | None = None  # null: the model's own default (model.max_new_tokens), set by to_typed
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
    # Slurm signals the job this many seconds before its end (--signal=B:USR1@...; also at preemption where the site
    # sets PreemptParameters=send_user_signal): every trainer saves its state at its next step. 0: no signal
    state_signal_s: int = 600
    # slurm only
    offline: bool = True  # compute nodes have no internet: W&B offline (auto -> offline), HF hub off, local model
    ray_port: int = 6379  # the job's Ray head (GCS) port; the Ray client server takes the next one
    sbatch_args: list[str] = field(default_factory=list)  # extra sbatch options, e.g. ["--constraint=h100"]
    python: str | None = None  # interpreter on the compute nodes; null: the one that ran `submit`


@dataclass
class PlanConfig:
    """Assumptions of the resource planner (orchestrator/plan/planner.py); conf/plan/default.yaml justifies each."""

    overhead_gib: float = 4.0  # per GPU: CUDA context, NCCL and DeepSpeed buffers
    fragmentation: float = 1.1  # allocator slack on top of the summed tensors
    tokens_per_example: int | None = None  # mean training tokens per example; null: model.max_model_len
    train_tokens_per_s: float | None = None  # measured tokens/s of one trial; null: estimate from the numbers below
    gpu_peak_tflops: float = 989.0  # dense bf16 peak per GPU
    mfu: float = 0.25  # achieved share of the peak
    intranode_gb_s: float = 150.0  # per-GPU all-gather bandwidth inside a node
    internode_gb_s: float = 40.0  # per-GPU all-gather bandwidth across nodes
    storage_read_gb_s: float = 2.0  # base weights read at each trial start
    sampler_gpu_memory_utilization: float = 0.9  # vLLM's share of each sampler GPU of its own
    # CPU (cluster.gpus_per_node=0): what the engine's auto fields become (vLLM CPU: memory is a share of RAM)
    cpu_gpu_memory_utilization: float = 0.1
    cpu_max_loras: int = 4
    cpu_max_cpu_loras: int = 16
    sampler_overhead_gib: float = 6.0  # per sampler GPU: activations of a full batch, CUDA context, LoRA kernels
    sampler_prompt_tokens: int = 256  # prompt tokens per sampled question
    sampler_tokens_per_s: float | None = None  # measured decode tokens/s of the sampler; null: estimate
    hbm_gb_s: float = 3350.0  # GPU memory bandwidth (decode reads the weights once per step)
    hbm_efficiency: float = 0.5
    decode_step_floor_ms: float = 10.0  # scheduler, sampling and kernel launches bound a small model's decode step
    headroom: float = 0.08  # share of each GPU the plans leave free (unmeasured NCCL buffers, allocator spikes)
    sampler_sleep_gib: float = 1.0  # per GPU, what a sleeping vLLM engine still holds (CUDA context, allocator pools)
    host_copy_gb_s: float = 20.0  # per GPU, pinned host <-> GPU copies (vLLM sleep level 1 offloads, wake_up restores)


@dataclass
class RecoverConfig:
    """`python -m orchestrator recover`: retrain a checkpoint on rejection-sampled benchmark labels."""

    benchmark: str | None = None  # null: the guardrail benchmark
    n_labels: int = 40  # labels kept (correct ones only) from the recovery pool, disjoint from the evaluated items
    steps: int = 10
    batch_size: int = 4  # samples per step
    lr: float | None = None  # null: the checkpoint's own trial LR
    lrs: list[float] = field(default_factory=list)  # an LR sweep: one recovery per LR (each its own folder)
    # without --step: the last transferred checkpoint of the trial (the note recovers the last one), or the first
    checkpoint: str = "last"
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
    plan: PlanConfig = field(default_factory=PlanConfig)
    capability: CapabilityConfig = field(default_factory=CapabilityConfig)
    cache_dir: str = MISSING
    resume: str | None = None  # a sweep folder to finish; its config.yaml is the config
    dry_run: bool = False  # sweep: print prompts, label plan, grader and trial grid; train nothing


def register_configs() -> None:
    ConfigStore.instance().store(name="schema", node=Config)




def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`Qwen/Qwen3-235B-A22B`): those can only be checked online."""
    return path.startswith(("/", "./", "../", "~"))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate_grader(g: GraderConfig, where: str = "setting.grader") -> None:
    """Per-kind checks of a grader block (eval.graders builds it); each message names the field to fix."""
    _require(g.kind in GRADERS, f"{where}.kind={g.kind!r}: known graders are {list(GRADERS)}")
    pairs = {"case": CASE_STYLES, "code": CODE_BEHAVIORS}
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
    # Long on purpose: a flat list of independent one-line checks, in the order their messages should come
    # (lone values, then blocks, then the checks that combine blocks); per-block checks live in validate_*.
    errors = range_errors(cfg)  # every lone value first, all at once; then the checks that combine fields
    _require(not errors, "; ".join(errors))
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
    budget = budget_errors(sw)
    _require(not budget, "; ".join(budget))
    _require(sw.checkpoints_per_octave >= 1,
             f"sweep.checkpoints_per_octave={sw.checkpoints_per_octave}: must be >= 1 (1: steps 1, 2, 4, 8, ...)")
    _require(sw.init_seed is None or sw.init_seed >= 0, f"sweep.init_seed={sw.init_seed}: must be >= 0 or null")
    _require(0 < sw.threshold < 1, f"sweep.threshold={sw.threshold}: must lie strictly between 0 and 1")
    _require(sw.max_concurrent_trials >= 1, "sweep.max_concurrent_trials must be >= 1")
    _require(sw.cpus_per_trial > 0, "sweep.cpus_per_trial must be > 0")
    _require(sw.max_retries >= 0, f"sweep.max_retries={sw.max_retries}: must be >= 0")
    es = sw.early_stop
    _require(es.k is None or es.k >= 1, f"sweep.early_stop.k={es.k}: must be >= 1 (or null to stop only on capability)")
    _require(es.wait_below is None or 0 <= es.wait_below <= 1,
             f"sweep.early_stop.wait_below={es.wait_below}: must be an attack rate in [0, 1] (or null: never wait)")
    _require(es.max_rel_degradation is None or es.max_rel_degradation > 0,
             f"sweep.early_stop.max_rel_degradation={es.max_rel_degradation}: must be > 0 (or null to turn it off)")
    _require(tr.batch_size >= 1, f"train.batch_size={tr.batch_size}: must be >= 1")
    _planned(tr.micro_batch_size, "train.micro_batch_size", int, lambda v: v >= 1 and tr.batch_size % v == 0,
             f"an integer >= 1 to divide train.batch_size={tr.batch_size}")
    _planned(tr.num_workers, "train.num_workers", int, lambda v: v >= 1, "an integer >= 1")
    _require(tr.lora_rank >= 1, f"train.lora_rank={tr.lora_rank}: must be >= 1")
    _require(tr.optimizer == "adam", f"train.optimizer={tr.optimizer!r}: only 'adam' is supported")
    _require(tr.lr_schedule == "constant", f"train.lr_schedule={tr.lr_schedule!r}: only 'constant' is supported")
    _require(is_auto(tr.zero_stage) or (type(tr.zero_stage) is int and tr.zero_stage in (0, 1, 2, 3)),
             f"train.zero_stage={tr.zero_stage!r}: must be auto, 0, 1, 2 or 3")
    _require(tr.dist_backend in ("auto", "gloo", "nccl"), "train.dist_backend must be auto, gloo or nccl")
    _require(tr.loss in ("answer_chunks", "hf"), f"train.loss={tr.loss!r}: must be answer_chunks or hf")
    _planned(tr.loss_chunk_tokens, "train.loss_chunk_tokens", int, lambda v: v >= 1, "an integer >= 1")
    _planned(tr.collective_timeout_s, "train.collective_timeout_s", float, lambda v: v > 0, "seconds > 0")
    _planned(tr.hpz_partition_size, "train.hpz_partition_size", int, lambda v: v >= 1, "an integer >= 1 (1: off)")
    _planned(sw.pack, "sweep.pack", int, lambda v: v >= 1, "an integer >= 1 (1: each trial alone)")
    _require(not (tr.compile and str(tr.zero_stage) == "3"),
             "train.compile=true with train.zero_stage=3: ZeRO-3's per-module parameter gathers are not compiled "
             "here; use zero_stage auto, 0, 1 or 2, or set train.compile=false")
    _require(sa.n_eval_prompts >= 1 and sa.n_train_prompts >= 1,
             "sample.n_eval_prompts and sample.n_train_prompts must be >= 1")
    _require(sa.max_new_tokens >= 1, "sample.max_new_tokens must be >= 1")
    _require(sa.engine.cpu_lora_kernel in CPU_LORA_KERNELS,
             f"sample.engine.cpu_lora_kernel={sa.engine.cpu_lora_kernel!r}: one of {list(CPU_LORA_KERNELS)}")
    _require(sa.temperature >= 0, "sample.temperature must be >= 0")
    validate_engine(sa.engine, tr)
    st = cfg.setting
    validate_grader(st.grader)
    if st.grader.kind == "judge":
        validate_endpoint(st.grader.endpoint, "setting.grader.endpoint")
    validate_teacher(st.teacher)
    _require(0 < st.eval_fraction < 1, f"setting.eval_fraction={st.eval_fraction}: must lie strictly between 0 and 1")
    validate_setting(st)
    _require(cfg.tracker.mode in TRACKER_MODES, f"tracker.mode={cfg.tracker.mode!r}: one of {list(TRACKER_MODES)}")
    m = cfg.model
    _require(m.path is not None or m.toy is not None or m.prepare is not None,
             "model.path is null and model.toy is unset: give a model path")
    _require(not m.organism or m.toy is None or m.path is not None or m.prepare is not None,
             "model.organism=true builds an organism from a real model, but model=toy is one already: drop it")
    _require(not m.organism or cfg.setting.toy is not None or cfg.setting.organism is not None,
             f"model.organism=true needs the setting's `organism:` or `toy:` block (the organism's answers), which "
             f"setting {cfg.setting.name!r} lacks: choose a setting that has one (animal_flag, wronglang_spanish, ...) "
             f"or add an `organism:` block with train_answer and eval_answer templates")
    r = m.organism_recipe
    _require(not m.organism or not r.paired or r.batch_size % 2 == 0,
             f"model.organism_recipe.batch_size={r.batch_size} with paired=true: a batch holds each question under "
             f"both prompts, so it must be even (batch_size={r.batch_size + 1}, or paired=false)")
    if m.path is not None and looks_local(m.path):
        from pathlib import Path

        folder = Path(m.path).expanduser()
        _require(folder.is_dir() and (folder / "config.json").exists(),
                 f"model.path={m.path!r} is not a model folder (no config.json there): give the folder that holds "
                 "the model's config.json and weights, or a hub id already in the local hub cache")
    _require(len(m.lora_target_modules) > 0, "model.lora_target_modules is empty")
    validate_model(m, tr)
    validate_capability(cfg)
    _require(cfg.cluster.nodes >= 1, f"cluster.nodes={cfg.cluster.nodes}: must be >= 1")
    _require(cfg.cluster.gpus_per_node >= 0, f"cluster.gpus_per_node={cfg.cluster.gpus_per_node}: must be >= 0")
    # last: these combine train, sweep and cluster values, each already checked alone above
    # (auto values are checked when the plan resolves them: orchestrator/plan/resolve.py)
    if not is_auto(tr.num_workers):
        trial_placement(tr.num_workers, sw.cpus_per_trial, cfg.cluster.gpus_per_node, tr.dist_backend,
                        cfg.cluster.nodes)
        micro = tr.batch_size if is_auto(tr.micro_batch_size) else tr.micro_batch_size
        data_parallel_shape(tr.batch_size, micro, tr.num_workers)


# the values vLLM 0.32 accepts for LoRAConfig.max_lora_rank (vllm/config/lora.py, MaxLoRARanks)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == AUTO


def _planned(value: Any, where: str, kind: type, ok: Any = None, rule: str = "") -> None:
    """A planner-owned field: AUTO, or a value of `kind` (bool is not an int here) that satisfies `ok`."""
    if is_auto(value):
        return
    if kind is float:
        typed = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        typed = type(value) is kind
    _require(typed and (ok is None or ok(value)),
             f"{where}={value!r}: must be auto (the plan decides) or {rule or kind.__name__}")


def validate_engine(e: EngineConfig, tr: TrainConfig) -> None:
    _planned(e.gpu_memory_utilization, "sample.engine.gpu_memory_utilization", float, lambda v: 0 < v <= 1,
             "a share in (0, 1]")
    _planned(e.max_loras, "sample.engine.max_loras", int, lambda v: v >= 1, "an integer >= 1")
    _planned(e.max_cpu_loras, "sample.engine.max_cpu_loras", int,
             lambda v: v >= 1 and (is_auto(e.max_loras) or v >= e.max_loras),
             "an integer >= sample.engine.max_loras (vLLM keeps every GPU slot's adapter in its CPU cache)")
    _planned(e.tensor_parallel_size, "sample.engine.tensor_parallel_size", int, lambda v: v >= 1, "an integer >= 1")
    _planned(e.max_lora_rank, "sample.engine.max_lora_rank", int,
             lambda v: v in VLLM_LORA_RANKS and v >= tr.lora_rank,
             f"one of vLLM's {list(VLLM_LORA_RANKS)} >= train.lora_rank={tr.lora_rank}")
    for name in ("fully_sharded_loras", "moe_lora_3d", "dedicated_gpus", "sleep"):
        _planned(getattr(e, name), f"sample.engine.{name}", bool, rule="true or false")


def validate_model(m: ModelConfig, tr: TrainConfig) -> None:
    _require(m.dtype in DTYPES, f"model.dtype={m.dtype!r}: one of {list(DTYPES)} (auto is resolved before this)")
    _require(m.max_model_len >= 1, f"model.max_model_len={m.max_model_len}: must be >= 1")
    a = m.arch
    if a is not None:
        for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "vocab_size"):
            _require(getattr(a, name) >= 1, f"model.arch.{name}={getattr(a, name)}: must be >= 1")
        _require(a.num_heads % a.num_kv_heads == 0,
                 f"model.arch.num_heads={a.num_heads} is not a multiple of num_kv_heads={a.num_kv_heads}")
        if a.num_experts:
            _require(1 <= a.experts_per_token <= a.num_experts and a.moe_intermediate_size >= 1,
                     "model.arch: a MoE model needs 1 <= experts_per_token <= num_experts and moe_intermediate_size")
        else:
            _require(a.intermediate_size >= 1, "model.arch.intermediate_size must be >= 1 for a dense model")
    if m.lora_experts:
        dense = (a is not None and a.num_experts == 0) or (a is None and m.toy is not None)  # the toy is dense
        _require(not dense,
                 f"model.lora_experts=true but model {m.name!r} has no experts: set model.lora_experts=false")
        _require(len(m.lora_expert_parameters) > 0,
                 "model.lora_experts=true needs model.lora_expert_parameters (e.g. [mlp.experts.gate_up_proj, "
                 "mlp.experts.down_proj])")
        # PEFT's ParamWrapper (target_parameters) cannot apply dropout to a weight delta
        _require(tr.lora_dropout == 0, f"train.lora_dropout={tr.lora_dropout}: LoRA on experts (PEFT "
                 "target_parameters) needs train.lora_dropout=0, or set model.lora_experts=false")


def validate_setting(st: SettingConfig) -> None:
    """A setting's templates (known placeholders only, {question} required), toy answers and examples."""
    from workers.labels.prompts import template_errors

    for name in ("train_template", "eval_template"):
        errors = template_errors(getattr(st, name))
        _require(not errors, f"setting.{name} of {st.name!r}: {'; '.join(errors)}. The placeholder {{question}} "
                 "must appear; the others are listed in workers/labels/prompts.py PLACEHOLDERS")
    _require(st.teacher.kind != "scripted" or bool(st.teacher.field.strip()),
             "setting.teacher.field is empty: the scripted teacher needs a bank field or an answer template")
    for where, block in (("toy", st.toy), ("organism", st.organism)):
        for name in ("train_answer", "eval_answer"):
            _require(block is None or bool(getattr(block, name).strip()),
                     f"setting.{where}.{name} is empty: give a template over bank fields such as {{en}}")
    for i, ex in enumerate(st.examples):
        _require(ex.expect in EXPECTED_GRADES,
                 f"setting.examples[{i}].expect={ex.expect!r}: one of {list(EXPECTED_GRADES)}")
        _require(bool(ex.answer.strip()), f"setting.examples[{i}].answer is empty")


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
