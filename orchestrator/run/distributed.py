"""A trial's trainer on N Ray Train workers (`train.num_workers > 1`): one placement group, DeepSpeed ZeRO.

The Tune trial is a thin driver: it builds a `TorchTrainer` whose N workers each run `workers.train.trainer.train`
on their share of every batch (Ray Train builds the torch.distributed group: gloo on CPU, NCCL on GPU;
DeepSpeed adopts it). Rank 0 runs the whole trial as a pack (orchestrator/run/pack.py) does in-process (run folder,
sampler
requests, grading, W&B); its metric rows reach Tune through a queue the driver relays with
`tune.report`, since `ray.train.report` is a collective every rank would have to join in step.
A failed worker fails the Train run and so the Tune trial; Tune's retry resumes it from trainer state.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from eval.runfiles import trial_name
from orchestrator.run.pack import Pack, follow_pack, pack_name
from orchestrator.run.trial import TrialContext


def run_distributed_pack(ctx: TrialContext, members: list[tuple[float, int]], report: Any) -> None:
    """Fit one pack's TorchTrainer (a pack of one: a lone trial) and relay rank 0's rows, tagged with their trial's
    name, to `report(name, row)` until it ends (re-raising its error)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    p = ctx.placement
    run_name = pack_name(members, ctx.sweep_dir) if len(members) > 1 else trial_name(*members[0], ctx.sweep_dir)
    rows = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"ctx": ctx, "members": members, "rows": rows},
        scaling_config=ray.train.ScalingConfig(
            num_workers=p.num_workers, use_gpu=p.gpus_per_worker > 0, resources_per_worker=dict(p.worker_resources),
            placement_strategy=p.strategy),
        torch_config=TorchConfig(backend=p.backend, timeout_s=int(ctx.train_spec.train.collective_timeout_s)),
        run_config=ray.train.RunConfig(
            name=f"{run_name}_{time.strftime('%Y%m%d_%H%M%S')}",
            storage_path=str(Path(ctx.sweep_dir) / "tune" / "train"),  # the sweep's (shared) storage
            failure_config=ray.train.FailureConfig(max_failures=0)),  # retries are Tune's, from trainer state
    )
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # re-raised in the trial's thread, so Tune sees the failure
            outcome["error"] = err

    fitting = threading.Thread(target=fit, name="lrsweep-fit", daemon=True)
    fitting.start()
    try:
        while True:
            try:
                report(*rows.get(timeout=0.5))
            except Empty:
                if not fitting.is_alive():
                    break
        while not rows.empty():  # rows put just before the run ended
            report(*rows.get_nowait())
    finally:
        fitting.join()
        rows.shutdown()
    if "error" in outcome:
        raise outcome["error"]


def _worker_loop(config: dict[str, Any]) -> None:
    """One Train worker: rank 0 runs the pack (training included), the others train beside it."""
    import ray
    import ray.train
    import torch

    ctx: TrialContext = config["ctx"]
    members, rows = config["members"], config["rows"]
    rank = ray.train.get_context().get_world_rank()
    nodes: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    if rank == 0:
        Pack(ctx, members, lambda name, row: rows.put((name, row)), extra={"placement": _where(nodes)}).run()
    else:
        follow_pack(ctx, members)


def _where(rank_nodes: list[str]) -> dict[str, Any]:
    """Where this trial ran: its placement group's strategy and bundles, each bundle's and rank's node."""
    from ray.util import get_current_placement_group, placement_group_table

    pg = get_current_placement_group()
    table = placement_group_table(pg) if pg is not None else {}
    bundles = table.get("bundles", {})
    nodes = table.get("bundles_to_node_id", {})
    return {"strategy": table.get("strategy"), "bundles": [bundles[i] for i in sorted(bundles)],
            "bundle_nodes": [nodes.get(i) for i in sorted(bundles)], "rank_nodes": rank_nodes}
