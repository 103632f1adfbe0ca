"""How a step's batch splits over data-parallel ranks: the trainer's DeepSpeed config and the orchestrator's
placement checks use the same arithmetic (orchestrator.placement re-exports it)."""

from __future__ import annotations

from workers.errors import ConfigError


def data_parallel_shape(batch_size: int, micro_batch_size: int, world_size: int) -> tuple[int, int]:
    """(micro batch per worker, accumulation steps) so that micro x accum x world = batch_size.

    Each worker takes batch_size / world examples of every step; micro_batch_size caps a worker's
    forward pass (a smaller share simply runs in one pass)."""
    if world_size < 1 or batch_size % world_size:
        raise ConfigError(f"train.batch_size={batch_size} must split evenly over train.num_workers={world_size}")
    share = batch_size // world_size
    micro = min(micro_batch_size, share)
    if share % micro:
        raise ConfigError(
            f"train.micro_batch_size={micro_batch_size} must divide each worker's share of the batch "
            f"({batch_size} / {world_size} workers = {share})")
    return micro, share // micro


def hpz_group_problem(rank_hosts: list[str], size: int) -> str | None:
    """What is wrong with hpZ's groups for ranks on these hosts (rank order), or None. DeepSpeed's hpZ
    (zero_hpz_partition_size) keeps its second weight copy over groups of `size` consecutive ranks; a group that
    spans two nodes makes every "intra-node" all-gather cross between them, the cost hpZ was chosen to avoid."""
    if size <= 1:
        return None
    if len(rank_hosts) % size:
        return (f"train.hpz_partition_size={size} does not divide the trial's {len(rank_hosts)} ranks: set it to the "
                "GPUs per node (auto does) or 1")
    for start in range(0, len(rank_hosts), size):
        nodes = sorted(set(rank_hosts[start:start + size]))
        if len(nodes) > 1:
            return (f"train.hpz_partition_size={size}: ranks {start}-{start + size - 1} span the nodes {nodes}, so "
                    "hpZ's in-node gathers would cross nodes; give the trial whole nodes (cluster.gpus_per_node GPUs "
                    "per node) or set train.hpz_partition_size=1")
    return None
