"""hpZ (ZeRO++ `zero_hpz_partition_size` > 1) with the sharded loader (workers/train/load.py): the weights every fetch
gathers, and the loss they give, equal those without hpZ.

DeepSpeed keeps a second copy of each weight sharded over the rank's hpZ group (`ds_secondary_tensor`) and every
fetch all-gathers from it; zero.Init fills it at construction, when the weights are not loaded yet, and refreshes
it only for trainable parameters. A loader that writes the primary partition alone leaves the frozen base's
secondary copy uninitialized: the model computes with garbage. Two gloo ranks, one hpZ group of 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fresh_process import run_ranks_in_fresh_processes
from tiny_moe import EXPERT_PARAMETERS, build_tiny_moe

from workers.train.config import unplanned
from workers.train.trainer import TrainSpec

WORLD = 2


def fetched_weights_and_loss(spec: TrainSpec, out: str, rank: int) -> None:
    """One rank: the engine's loss on a fixed batch, and every base weight gathered the way a forward fetches it
    (all_gather_coalesced: from the secondary copy when there is one), written by rank 0."""
    import torch

    from workers.train.trainer import build_engine, init_distributed

    init_distributed("auto")
    torch.set_num_threads(1)
    engine = build_engine(spec, WORLD, log=lambda line: None)
    ids = torch.arange(3, 35).reshape(2, 16)
    with torch.no_grad():
        loss = engine(input_ids=ids, labels=ids).loss.item()
    weights = {}
    for name, p in engine.module.get_base_model().named_parameters():
        if "lora_" in name or not hasattr(p, "ds_id"):
            continue
        p.all_gather_coalesced([p]).wait()
        weights[name] = p.detach().to("cpu", copy=True)
        p.partition()
    if rank == 0:
        torch.save(weights, Path(out, "weights.pt"))
        Path(out, "loss.json").write_text(json.dumps(loss))
    torch.distributed.barrier()
    engine.destroy()
    torch.distributed.destroy_process_group()


def test_hpz_loads_the_secondary_partition_too(tmp_path: Path) -> None:
    import torch

    model = build_tiny_moe(tmp_path / "moe", shard_bytes=64 * 2**10)
    got = {}
    for hpz in (1, 2):
        out = tmp_path / f"hpz{hpz}"
        out.mkdir()
        spec = TrainSpec(model_path=str(model), dtype="bfloat16", lora_target_modules=["q_proj", "v_proj"], lr=1e-3,
                         seed=0, max_steps=1, checkpoint_steps=[1], lora_expert_parameters=EXPERT_PARAMETERS,
                         train=unplanned(batch_size=WORLD, micro_batch_size=1, zero_stage=3, loss="hf",
                                         hpz_partition_size=hpz))
        run_ranks_in_fresh_processes(fetched_weights_and_loss, (spec, str(out)), WORLD, 240, f"hpZ {hpz} load")
        got[hpz] = (torch.load(out / "weights.pt"), json.loads((out / "loss.json").read_text()))
    (plain, plain_loss), (hpz, hpz_loss) = got[1], got[2]
    assert set(plain) == set(hpz) and plain
    wrong = [name for name in plain if not torch.equal(plain[name], hpz[name])]
    assert not wrong, f"{len(wrong)} of {len(plain)} weights differ under hpZ 2 (e.g. {wrong[:3]})"
    assert hpz_loss == pytest.approx(plain_loss, rel=1e-6), (hpz_loss, plain_loss)
