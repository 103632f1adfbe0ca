"""The train block (conf/train/*.yaml): what every trial's trainer reads (workers/train/trainer.py and packed.py).

Planner-owned fields hold AUTO until orchestrator/plan/resolve.py fills them in from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval.knobs import AT_LEAST_1, AUTO, NON_NEGATIVE, POSITIVE, Interval, knob


@dataclass
class TrainConfig:
    batch_size: int = knob(32, within=AT_LEAST_1)
    # per GPU (per worker); auto: the largest that fits (the rest is accumulation)
    micro_batch_size: Any = knob(AUTO, within=AT_LEAST_1, kind=int)
    lora_rank: int = knob(8, within=AT_LEAST_1)
    # as Tinker (the note's authors' platform): 32 whatever the rank, so scale = 32 / rank
    lora_alpha: int = knob(32, within=POSITIVE)
    lora_dropout: float = knob(0.0, within=Interval(0, 1, hi_open=True))  # 1 would zero every LoRA input
    optimizer: str = knob("adam", one_of=("adam",))
    betas: list[float] = knob(factory=lambda: [0.9, 0.999], within=Interval(0, 1, hi_open=True))  # torch: < 1
    weight_decay: float = knob(0.0, within=NON_NEGATIVE)
    lr_schedule: str = knob("constant", one_of=("constant",))
    # auto: the planner's choice (3 only when the model does not fit one GPU unsharded); or 0, 1, 2, 3.
    zero_stage: Any = knob(AUTO, one_of=(AUTO, "0", "1", "2", "3"), kind=int)
    dist_backend: str = knob("auto", one_of=("auto", "gloo", "nccl"))
    torch_threads: int = knob(1, within=AT_LEAST_1)
    # answer_chunks: loss on answer tokens only, the LM head applied loss_chunk_tokens rows at a time (full-vocab
    # logits never materialise); hf: the model's own loss over logits at every position (benchmark baseline)
    loss: str = knob("answer_chunks", one_of=("answer_chunks", "hf"))
    # int; auto: the largest of PLANNED_LOSS_CHUNKS that fits (4096 where memory allows)
    loss_chunk_tokens: Any = knob(AUTO, within=AT_LEAST_1, kind=int)
    # ZeRO++ hierarchical partitioning (DeepSpeed zero_hpz_partition_size): a second copy of the frozen base sharded
    # inside each node, so the per-step all-gathers stay on the node's links; 1: off; auto: the plan's
    hpz_partition_size: Any = knob(AUTO, within=AT_LEAST_1, kind=int)
    # seconds a collective waits before the trainers' process group gives up (NCCL's watchdog): rank 0 waits for
    # the sampler and the grader at checkpoints while the other ranks sit in a collective; auto: the plan's
    # time.collective_timeout_s (3x its longest checkpoint wait, at least 1800)
    collective_timeout_s: Any = knob(AUTO, within=POSITIVE)
    compile: bool = False  # torch.compile each decoder layer; ZeRO stages 0-2 only
    # trainer processes per trial (one per GPU; a Ray placement group holds them); auto: plan
    num_workers: Any = knob(AUTO, within=AT_LEAST_1, kind=int)
    # trainer state (LoRA, Adam, RNG, data position) also every this many seconds, at a step boundary, so a
    # preempted trial repeats at most this much training; 0: at checkpoint steps only
    state_every_s: float = knob(600.0, within=Interval(0, note="seconds; 0: save state at checkpoints only"))


def unplanned(**knobs: Any) -> TrainConfig:
    """The train block of a trainer run without a plan (tests, benches): one worker, ZeRO-3, the whole batch in one
    micro-batch, the loss in 4096-token chunks, no hpZ, a 30-minute collective timeout; `knobs` change any field."""
    planned = {"micro_batch_size": knobs.get("batch_size", TrainConfig().batch_size), "zero_stage": 3,
               "loss_chunk_tokens": 4096, "hpz_partition_size": 1, "collective_timeout_s": 1800.0, "num_workers": 1}
    return TrainConfig(**{**planned, **knobs})
