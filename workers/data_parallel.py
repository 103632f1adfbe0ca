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
