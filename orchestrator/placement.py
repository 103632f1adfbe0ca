"""Where a sweep's processes go: each trial's trainer workers and the shared vLLM sampler. Pure functions.

A trial's N trainer workers share one Ray placement group of N identical bundles: one GPU each when the
nodes have GPUs (`cluster.gpus_per_node > 0`), otherwise a share of `sweep.cpus_per_trial`. The strategy
is PACK: Ray puts all bundles on one node whenever one node has room, and spreads over as few nodes as
possible when none has. STRICT_PACK would never start a trial wider than one node (the 235B trials
are), and it would also leave idle the GPUs that the sampler and other trials leave on partly used
nodes, waiting for a whole free node instead. What PACK costs: on a fragmented cluster a trial that
would fit one node can land on two, its ZeRO-3 gathers crossing the inter-node link; sizing
`train.num_workers` to a node's GPUs (or a divisor of them) keeps trials whole.

The sampler is a separate long-lived actor. With GPUs of its own (`sample.engine.dedicated_gpus`) it holds
`tensor_parallel_size` of them. Sharing the trainers' GPUs it asks Ray for none: a fractional request would keep
every trainer's whole-GPU bundle off those GPUs, and Ray 2.x leaves CUDA_VISIBLE_DEVICES as the node set it for
an actor that holds no GPU (unless RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1, which `sampler_placement` refuses), so
vLLM takes the node's first `tensor_parallel_size` GPUs. Ray does not count that memory: the plan does, giving
every trainer GPU the room (the static share, or the sleeping engine's `plan.sampler_sleep_gib`).
When a node offers the custom resource SAMPLER_RESOURCE
the sampler also asks for it, which pins it to that node (the sweep's own local Ray offers it; on a
cluster, start the node meant for sampling with `ray start --resources='{"lrsweep_sampler": 1}'`);
on CPU nodes that marker is what keeps it apart from the trainers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.errors import ConfigError
from workers.train.data_parallel import (
    data_parallel_shape as data_parallel_shape,  # re-exported: it lives with the trainer
)

SAMPLER_RESOURCE = "lrsweep_sampler"
OVERRIDE_ON_ZERO = "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"  # ray._private.accelerators: hide GPUs from GPU-less actors
STRATEGY = "PACK"
# the Tune trial of a multi-worker trial only starts the trainer group and relays its rows to Tune;
# Tune needs a non-empty request for it, the trainers hold the trial's real resources
DRIVER_CPUS = 0.01


@dataclass(frozen=True)
class TrialPlacement:
    """One trial's trainer processes: N workers with identical bundles, and how to place them."""

    num_workers: int
    worker_resources: dict[str, float]  # Ray resource names: "CPU", "GPU"
    strategy: str
    backend: str  # torch.distributed backend: nccl on GPUs, gloo on CPUs

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [dict(self.worker_resources) for _ in range(self.num_workers)]

    @property
    def gpus_per_worker(self) -> float:
        return self.worker_resources.get("GPU", 0.0)

    def tune_resources(self) -> dict[str, float]:
        """What the Tune trial itself requests: all of it in-process (one worker), else only the driver."""
        if self.num_workers > 1:
            return {"cpu": DRIVER_CPUS}
        return {"cpu": self.worker_resources["CPU"], "gpu": self.gpus_per_worker}


@dataclass(frozen=True)
class SamplerPlacement:
    """Ray actor options for the sampler: `num_cpus`, `num_gpus`, custom `resources`."""

    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict)

    def actor_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts


def trial_placement(num_workers: int, cpus_per_trial: float, gpus_per_node: int, dist_backend: str = "auto",
                    nodes: int = 1) -> TrialPlacement:
    """The bundles and strategy of one trial's trainer workers (see the module docstring)."""
    if num_workers < 1:
        raise ConfigError(f"train.num_workers={num_workers}: must be >= 1")
    if cpus_per_trial <= 0:
        raise ConfigError(f"sweep.cpus_per_trial={cpus_per_trial}: must be > 0")
    if gpus_per_node < 0:
        raise ConfigError(f"cluster.gpus_per_node={gpus_per_node}: must be >= 0 (0: CPU only)")
    if gpus_per_node and num_workers > gpus_per_node * nodes:
        raise ConfigError(
            f"train.num_workers={num_workers} needs {num_workers} GPUs but the cluster has "
            f"{nodes} x {gpus_per_node}: lower train.num_workers or raise cluster.nodes")
    resources = {"CPU": cpus_per_trial / num_workers}
    if gpus_per_node:
        resources["GPU"] = 1.0
    if dist_backend == "auto":
        dist_backend = "nccl" if gpus_per_node else "gloo"
    return TrialPlacement(num_workers, resources, STRATEGY, dist_backend)


def sampler_placement(tensor_parallel_size: int, gpus_per_node: int, marker_offered: bool, nodes: int = 1,
                      trial_gpus: int = 1, dedicated: bool | None = None) -> SamplerPlacement:
    """The sampler's own resources: its tensor-parallel GPUs on GPU nodes; and the marker resource when
    some node offers it, which pins the sampler there (without it, on CPU nodes it shares the trials' nodes).

    `dedicated` is the plan's decision (sample.engine.dedicated_gpus): True holds the GPUs, False shares the
    trainers' (holding none; vLLM keeps to its gpu_memory_utilization share). None decides here as the plan
    does on one machine: a cluster too small to give both the sampler and one trial their own GPUs (a
    single-GPU workstation) gets the sampler on the trainers' GPU."""
    if tensor_parallel_size < 1:
        raise ConfigError(f"sample.engine.tensor_parallel_size={tensor_parallel_size}: must be >= 1")
    import os

    if gpus_per_node and dedicated is False and os.environ.get(OVERRIDE_ON_ZERO, "").lower() in ("1", "true"):
        raise ConfigError(f"{OVERRIDE_ON_ZERO} is set: Ray would hide every GPU from the sampler, which shares the "
                          f"trainers' GPUs without holding one; unset it (or set sample.engine.dedicated_gpus=true)")
    marker = {SAMPLER_RESOURCE: 1.0} if marker_offered else {}
    if gpus_per_node:
        if tensor_parallel_size > gpus_per_node:
            raise ConfigError(
                f"sample.engine.tensor_parallel_size={tensor_parallel_size} exceeds cluster.gpus_per_node="
                f"{gpus_per_node}: one vLLM engine spans one node; lower the tensor parallel size")
        if dedicated or (dedicated is None and gpus_per_node * nodes >= tensor_parallel_size + trial_gpus):
            return SamplerPlacement(num_cpus=1, num_gpus=tensor_parallel_size, resources=marker)
    # no CPU held: on a laptop the trials need every core, and the engine idles between checkpoints
    return SamplerPlacement(num_cpus=0, num_gpus=0, resources=marker)
