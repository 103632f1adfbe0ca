"""Typed config schema: dataclasses registered with Hydra's ConfigStore, plus the checks that combine fields.

YAML in conf/ supplies the values; these classes fix the names and types, so a misspelt override
(`sweep.lr=...`) or a non-numeric LR fails while Hydra composes, before anything starts. Each field carries its own
rule (`knob(default, within=<range>, one_of=<values>)`, eval/knobs.py): `validate` checks every value against its
field's rule first, all at once, then adds the checks a single field cannot express (unique, divisible, one block
against another, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from eval.knobs import (
    AT_LEAST_1,
    AUTO,
    FRACTION_OPEN,
    FRACTION_UP_TO_1,
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    is_auto,
    knob,
)
from eval.stopping import EarlyStopConfig
from orchestrator.budget import budget_errors
from orchestrator.placement import data_parallel_shape, trial_placement
from workers.capability import CapabilityConfig, validate_capability
from workers.errors import ConfigError as ConfigError  # re-exported: the error every config check raises
from workers.errors import require, require_knobs
from workers.labels.endpoint import validate_endpoint
from workers.labels.setting import SettingConfig, validate_grader, validate_setting
from workers.labels.teacher import validate_teacher
from workers.models.config import ModelConfig, validate_model_block
from workers.sample.config import SampleConfig, validate_engine
from workers.tracking import TrackerConfig
from workers.train.config import TrainConfig

# Blocks live beside the code that reads them: setting (grader, teacher, endpoint): workers.labels; model (toy and
# organism recipes): workers.models; train: workers.train.config; sample and engine: workers.sample.config; tracker:
# workers.tracking; capability and recover: workers.capability; early stop: eval.stopping. This module composes them
# with the blocks the orchestrator reads itself (sweep, cluster, plan), and holds the checks that combine blocks.
KEEP_ADAPTERS = (AUTO, "all", "around_transfer", "last")  # sweep.keep_adapters (orchestrator/plan/keep_adapters.py)


@dataclass
class SweepConfig:
    lrs: list[float] = knob(MISSING, within=Interval(0, lo_open=True, note="a positive finite learning rate"))
    # each trial's data_seed (the order of its batches)
    seeds: list[int] = knob(factory=lambda: [0], within=NON_NEGATIVE)
    # LoRA init and torch's seed of every trial; null: the trial's seed (then a seed varies init and data order).
    # The note's seeds change data order only, hence 0 (config.json says which varied)
    init_seed: int | None = knob(0, within=NON_NEGATIVE)
    # every LR's steps; with lr_steps_budget or steps_per_lr, the cap (orchestrator/budget.py)
    max_steps: int = knob(64, within=AT_LEAST_1)
    # each LR trains ceil(budget / lr) steps (a budget in LR x steps)
    lr_steps_budget: float | None = knob(
        None, within=Interval(0, lo_open=True, note="LR x steps, e.g. 0.064: lr 1e-3 trains 64 steps"))
    steps_per_lr: list[int] = knob(factory=list, within=AT_LEAST_1)  # or one step count per LR, in lrs' order
    # checkpoints every 2^(1/n) steps (integers, deduplicated), plus 0 and the last
    checkpoints_per_octave: int = knob(1, within=AT_LEAST_1)
    threshold: float = knob(0.5, within=FRACTION_OPEN)
    # not an organism: a train desired rate at step 0 below this (or an eval attack rate <= threshold) means the model
    # does not show the setting's initial behavior, and steps-to-transfer is undefined rather than 0
    organism_min_train_desired: float = knob(0.5, within=Interval(0, 1, note="0 turns the check off"))
    # transfer by collapse: eval other rate at the transfer checkpoint > this and > the eval desired rate
    collapse_other_rate: float = knob(0.5, within=Interval(0, 1, hi_open=True))
    max_concurrent_trials: int = knob(2, within=AT_LEAST_1)
    cpus_per_trial: float = knob(1.0, within=POSITIVE)
    max_retries: int = knob(2, within=NON_NEGATIVE)
    ray_address: str | None = None
    # progress table's period when stdout is not a terminal (logs, Slurm .out)
    progress_interval_s: float = knob(60.0, within=POSITIVE)
    # trials (LRs and seeds of this setting) trained together in one pass over the frozen base
    # (workers/train/packed.py);
    # auto: the plan's K on GPUs (memory for K x batch activations, at most the sweep's trials), 1 on CPU and where
    # the packed trainer refuses the setup (train.loss=hf, dropout, compile: workers/train/pack_rules.py); 1: each
    # trial alone
    pack: Any = knob(AUTO, within=AT_LEAST_1, kind=int)
    # checkpoint adapters kept on disk (orchestrator/plan/keep_adapters.py): all, around_transfer, last; auto: all on a
    # local cluster, around_transfer on Slurm (the plan prices the disk either way)
    keep_adapters: str = knob(AUTO, one_of=KEEP_ADAPTERS)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)


@dataclass
class ClusterConfig:
    """Where a sweep runs: this machine (`local`) or a Slurm cluster of GPU nodes (`slurm`)."""

    kind: str = knob("local", one_of=("local", "slurm"))  # local | slurm
    nodes: int = knob(1, within=AT_LEAST_1)
    gpus_per_node: int = knob(0, within=NON_NEGATIVE)  # 0: CPU only (the toy on a laptop)
    gpu_memory_gib: float = knob(80.0, within=POSITIVE)
    cpus_per_node: int = knob(0, within=NON_NEGATIVE)  # 0: whatever the node has
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str = "48:00:00"
    setup: list[str] = field(default_factory=list)  # shell lines run on every node first (modules, venv)
    storage: str | None = None  # shared filesystem path for sweep folders and adapters (null: local folder)
    requeue: bool = True  # let Slurm requeue a preempted job; the sweep resumes from its run files
    # Slurm signals the job this many seconds before its end (--signal=B:USR1@...; also at preemption where the site
    # sets PreemptParameters=send_user_signal): every trainer saves its state at its next step. 0: no signal
    state_signal_s: int = knob(600, within=Interval(0, 65535, note="seconds before the job's end; 0: no signal"))
    # slurm only
    offline: bool = True  # compute nodes have no internet: W&B offline (auto -> offline), HF hub off, local model
    # the job's Ray head (GCS) port; the Ray client server takes the next one
    ray_port: int = knob(6379, within=Interval(1024, 65534))
    sbatch_args: list[str] = field(default_factory=list)  # extra sbatch options, e.g. ["--constraint=h100"]
    python: str | None = None  # interpreter on the compute nodes; null: the one that ran `submit`


@dataclass
class PlanConfig:
    """Assumptions of the resource planner (orchestrator/plan/planner.py); conf/plan/default.yaml justifies each."""

    overhead_gib: float = knob(4.0, within=NON_NEGATIVE)  # per GPU: CUDA context, NCCL and DeepSpeed buffers
    fragmentation: float = knob(1.1, within=Interval(1))  # allocator slack on top of the summed tensors
    # mean training tokens per example; null: model.max_model_len
    tokens_per_example: int | None = knob(None, within=AT_LEAST_1)
    # measured tokens/s of one trial; null: estimate from the numbers below
    train_tokens_per_s: float | None = knob(None, within=POSITIVE)
    gpu_peak_tflops: float = knob(989.0, within=POSITIVE)  # dense bf16 peak per GPU
    mfu: float = knob(0.25, within=FRACTION_UP_TO_1)  # achieved share of the peak
    intranode_gb_s: float = knob(150.0, within=POSITIVE)  # per-GPU all-gather bandwidth inside a node
    internode_gb_s: float = knob(40.0, within=POSITIVE)  # per-GPU all-gather bandwidth across nodes
    storage_read_gb_s: float = knob(2.0, within=POSITIVE)  # base weights read at each trial start
    # vLLM's share of each sampler GPU of its own
    sampler_gpu_memory_utilization: float = knob(0.9, within=FRACTION_UP_TO_1)
    # CPU (cluster.gpus_per_node=0): what the engine's auto fields become (vLLM CPU: memory is a share of RAM)
    cpu_gpu_memory_utilization: float = knob(0.1, within=FRACTION_UP_TO_1)
    cpu_max_loras: int = knob(4, within=AT_LEAST_1)
    cpu_max_cpu_loras: int = knob(16, within=AT_LEAST_1)
    # per sampler GPU: activations of a full batch, CUDA context, LoRA kernels
    sampler_overhead_gib: float = knob(6.0, within=NON_NEGATIVE)
    sampler_prompt_tokens: int = knob(256, within=AT_LEAST_1)  # prompt tokens per sampled question
    # measured decode tokens/s of the sampler; null: estimate
    sampler_tokens_per_s: float | None = knob(None, within=POSITIVE)
    hbm_gb_s: float = knob(3350.0, within=POSITIVE)  # GPU memory bandwidth (decode reads the weights once per step)
    hbm_efficiency: float = knob(0.5, within=FRACTION_UP_TO_1)
    # scheduler, sampling and kernel launches bound a small model's decode step
    decode_step_floor_ms: float = knob(10.0, within=NON_NEGATIVE)
    # share of each GPU the plans leave free (unmeasured NCCL buffers, allocator spikes)
    headroom: float = knob(0.08, within=Interval(0, 1, hi_open=True))
    # per GPU, what a sleeping vLLM engine still holds (CUDA context, allocator pools)
    sampler_sleep_gib: float = knob(1.0, within=NON_NEGATIVE)
    # per GPU, pinned host <-> GPU copies (vLLM sleep level 1 offloads, wake_up restores)
    host_copy_gb_s: float = knob(20.0, within=POSITIVE)


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


def validate(cfg: Config) -> None:
    """Reject configs that would fail late or give meaningless results. Raises ConfigError."""
    # Every lone value against its field's rule first, all at once (eval/knobs.py); then, in the order their messages
    # should come, the checks a single field cannot express: per block in validate_*, then those that combine blocks.
    require_knobs(cfg, "")
    sw, tr = cfg.sweep, cfg.train
    require(len(sw.lrs) > 0, "sweep.lrs is empty: give at least one learning rate, e.g. sweep.lrs=[1e-4,1e-3]")
    require(len(set(sw.lrs)) == len(sw.lrs), f"sweep.lrs {list(sw.lrs)} repeats a value: each LR must appear once")
    require(len(sw.seeds) > 0, "sweep.seeds is empty: give at least one seed, e.g. sweep.seeds=[0]")
    require(len(set(sw.seeds)) == len(sw.seeds), f"sweep.seeds {list(sw.seeds)} repeats a value")
    budget = budget_errors(sw)
    require(not budget, "; ".join(budget))
    require(is_auto(tr.micro_batch_size) or tr.batch_size % tr.micro_batch_size == 0,
            f"train.micro_batch_size={tr.micro_batch_size}: must divide train.batch_size={tr.batch_size}")
    require(not (tr.compile and str(tr.zero_stage) == "3"),
            "train.compile=true with train.zero_stage=3: ZeRO-3's per-module parameter gathers are not compiled "
            "here; use zero_stage auto, 0, 1 or 2, or set train.compile=false")
    validate_engine(cfg.sample.engine, tr.lora_rank)
    st = cfg.setting
    validate_grader(st.grader)
    if st.grader.kind == "judge":
        validate_endpoint(st.grader.endpoint, "setting.grader.endpoint")
    validate_teacher(st.teacher)
    validate_setting(st)
    validate_model(cfg)
    validate_capability(cfg.capability, cfg.model.toy)
    # last: these combine train, sweep and cluster values, each already checked alone above
    # (auto values are checked when the plan resolves them: orchestrator/plan/resolve.py)
    if not is_auto(tr.num_workers):
        trial_placement(tr.num_workers, sw.cpus_per_trial, cfg.cluster.gpus_per_node, tr.dist_backend,
                        cfg.cluster.nodes)
        micro = tr.batch_size if is_auto(tr.micro_batch_size) else tr.micro_batch_size
        data_parallel_shape(tr.batch_size, micro, tr.num_workers)


def validate_model(cfg: Config) -> None:
    """The model block against the setting and the train block (its own checks: workers.models.config)."""
    m = cfg.model
    validate_model_block(m)
    require(not m.organism or cfg.setting.toy is not None or cfg.setting.organism is not None,
            f"model.organism=true needs the setting's `organism:` or `toy:` block (the organism's answers), which "
            f"setting {cfg.setting.name!r} lacks: choose a setting that has one (animal_flag, wronglang_spanish, ...) "
            f"or add an `organism:` block with train_answer and eval_answer templates")
    # PEFT's ParamWrapper (target_parameters) cannot apply dropout to a weight delta
    require(not m.lora_experts or cfg.train.lora_dropout == 0,
            f"train.lora_dropout={cfg.train.lora_dropout}: LoRA on experts (PEFT target_parameters) needs "
            "train.lora_dropout=0, or set model.lora_experts=false")
