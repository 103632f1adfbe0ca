"""Peak host memory per rank while a ZeRO-3 trainer loads a multi-shard per-expert MoE: the old route
(transformers' `from_pretrained` under `HfDeepSpeedConfig`) and the trainer's (`workers.train.trainer.build_model`,
which
loads through `workers/train/load.py`), side by side in one run, each on `--world` fresh gloo ranks:

    PYTHONPATH=$PWD python bench/load_memory.py --layers 8,24 --out bench/results/load_memory.json

Each rank resets its peak-RSS mark (/proc/self/clear_refs) after its imports and process group are up, loads,
and reads the mark back (VmHWM): `increase` is that peak minus the RSS before the load, `partitions` the bytes of
the rank's own ZeRO-3 partitions (host memory on CPU; on a GPU they live there), and `transient` the difference:
what a rank holds beyond its share of the model while loading. `tests/integration/test_load_ranks.py` runs the same
measurement.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("from_pretrained", "build_model")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_finished_rank() -> None:
    """End a rank process whose work is done and written, skipping interpreter finalization: gloo's C++ worker
    threads can outlive `destroy_process_group`, and their destructors then abort the process during teardown
    (SIGABRT, "terminate called without an active exception"; CI saw it once in about 1000 tests), which would
    fail a run whose every result is already on disk. Output is flushed first. A failure before this point
    still raises and exits non-zero as usual."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def base_state(model: Any) -> dict[str, Any]:
    """Every base-model parameter and buffer, gathered whole from ZeRO-3, on CPU, under the names the plain
    transformers model uses (PEFT's wrapper prefixes and LoRA tensors left out). Collective."""
    import deepspeed

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    state = {}
    for name, p in base.named_parameters():
        if "lora_" in name:
            continue
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            state[name.replace(".base_layer", "")] = p.detach().to("cpu", copy=True)
    for name, b in base.named_buffers():
        state[name] = b.detach().to("cpu", copy=True)
    return state


def rank_main(rank: int, world: int, port: int, model_path: str, mode: str, dtype: str, out_dir: str,
              gather: bool) -> None:
    """One rank: load `model_path` by `mode` under ZeRO-3, write rank{r}.json (and weights.pt from rank 0)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed  # noqa: F401
    import peft  # noqa: F401  (imported before the baseline: its import is not load memory)
    import transformers  # noqa: F401

    from workers.train.config import unplanned
    from workers.train.trainer import TrainSpec, build_model, deepspeed_config, init_distributed

    init_distributed("auto")
    torch.set_num_threads(1)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    from transformers import AutoConfig, AutoModelForCausalLM

    # the model's modeling module is imported before the baseline too: its import is not load memory
    AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(model_path))]
    spec = TrainSpec(model_path=model_path, dtype=dtype, lora_target_modules=["q_proj", "v_proj"], lr=1e-3, seed=0,
                     max_steps=1, checkpoint_steps=[1],
                     train=unplanned(batch_size=world, micro_batch_size=1, zero_stage=3))
    ds_config = deepspeed_config(spec, world)
    torch.distributed.barrier()
    before = _status_kib("VmRSS") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    began = time.time()
    if mode == "from_pretrained":  # the old route: transformers' own ZeRO-3 load
        from transformers.integrations import HfDeepSpeedConfig

        keep = HfDeepSpeedConfig(ds_config)  # noqa: F841  (transformers sees ZeRO-3 while it lives)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    else:
        model = build_model(spec, ds_config, log=lambda line: None)
    load_s = time.time() - began
    peak = _status_kib("VmHWM") * 1024
    partitions = sum(p.ds_tensor.numel() * p.ds_tensor.element_size() for p in model.parameters()
                     if getattr(p, "ds_tensor", None) is not None and p.ds_tensor.device.type == "cpu")
    result = {"rank": rank, "world": world, "mode": mode, "load_s": round(load_s, 3), "rss_before": before,
              "peak": peak, "increase": peak - before, "partitions": partitions,
              "transient": peak - before - partitions}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    if gather:
        state = base_state(model)
        if rank == 0:
            torch.save(state, Path(out_dir, "weights.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def rank_process(*args: Any) -> None:
    """rank_main as the whole of a spawned rank process (measure's), which then ends without teardown."""
    rank_main(*args)
    end_finished_rank()


def measure(model_path: Path, mode: str, out_dir: Path, world: int = 2, dtype: str = "bfloat16",
            gather: bool = False, deadline_s: float = 600) -> list[dict[str, Any]]:
    """Load on `world` fresh processes; each rank's figures (a hang or a crash raises)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx, port = multiprocessing.get_context("spawn"), _free_port()
    procs = [ctx.Process(target=rank_process, args=(r, world, port, str(model_path), mode, dtype, str(out_dir), gather))
             for r in range(world)]
    for p in procs:
        p.start()
    end = time.time() + deadline_s
    for p in procs:
        p.join(max(1.0, end - time.time()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join()
    if alive or any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"{mode} load on {world} ranks failed: exit codes {[p.exitcode for p in procs]}"
                           + (f" (killed after {deadline_s}s)" if alive else ""))
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]


def checkpoint_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    from tiny_moe import build_tiny_moe

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="8,24", help="comma-separated layer counts: one checkpoint each")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--expert-width", type=int, default=256)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--shard-mb", type=int, default=48)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lrsweep-load-memory"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/load_memory.json"))
    args = ap.parse_args(argv)
    mib = 2**20
    out: dict[str, Any] = {"world": args.world, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "cpus": os.cpu_count(), "sizes": []}
    for layers in [int(x) for x in args.layers.split(",")]:
        model = args.work / f"moe_l{layers}_h{args.hidden}_w{args.expert_width}_e{args.experts}_s{args.shard_mb}"
        if not (model / "config.json").exists():
            build_tiny_moe(model, shard_bytes=args.shard_mb * mib, layers=layers, hidden=args.hidden,
                           expert_width=args.expert_width, experts=args.experts)
        runs = {mode: measure(model, mode, args.work / f"l{layers}_{mode}", args.world) for mode in MODES}
        out["sizes"].append({
            "checkpoint": {"layers": layers, "hidden": args.hidden, "expert_width": args.expert_width,
                           "experts": args.experts, "mib": round(checkpoint_bytes(model) / mib, 1),
                           "files": len(list(model.glob("*.safetensors"))), "shard_mib": args.shard_mb},
            "load_average": os.getloadavg(),
            "runs": runs,
            "summary_mib": {mode: {"max_increase": round(max(r["increase"] for r in rs) / mib, 1),
                                   "max_transient": round(max(r["transient"] for r in rs) / mib, 1),
                                   "partitions": round(max(r["partitions"] for r in rs) / mib, 1),
                                   "load_s": max(r["load_s"] for r in rs)} for mode, rs in runs.items()},
        })
        print(json.dumps(out["sizes"][-1]["checkpoint"]), json.dumps(out["sizes"][-1]["summary_mib"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
