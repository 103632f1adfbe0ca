"""One GPU acceptance check of lrsweep's trainer path, within 8 minutes on one H100 or H200 (docs/gpu.md):

    python bench/gpu_check.py                                        # on the lent GPU: bench/results/gpu_check.json
    python bench/gpu_check.py --cpu-smoke --out /tmp/gpu_check.json  # CPU, toy shapes: the script runs (CI)

It needs torch, transformers, PEFT and DeepSpeed (carried as wheels: ../shared/GPU.md), plus hydra-core and
omegaconf for the planner; no vLLM and no Ray. Its phases run one after another, and the JSON file is rewritten
after each one, so a run cut short still leaves its figures:

1. `moe_pack`: the product's packed expert LoRA. A random-init Qwen3-MoE with Qwen3-30B-A3B's layer shape (cut to
   `--layers` layers) and LoRA on attention, lm_head and the experts. The run uses bf16, ZeRO-3 with each sparse-MoE
   block fetched whole, and non-reentrant gradient checkpointing. Two trials train alone (`workers.train.trainer.train`)
   and then as one pack of two (`workers.train.pack_train.train_pack`), each in a fresh process. Every adapter tensor
   and step loss of the pack must match its trial alone within bf16 tolerance.
2. `dense_mfu`: the trainer (`build_engine` + `train_step`, bench/trainer_gpu.py) on Qwen3-1.7B's shape, with a
   batch of 32 x 512 tokens, the last 128 of each carrying the loss, at micro-batch 16. It reports tokens/s, MFU
   against the chip's dense bf16 peak (4N FLOPs per token), and the peak GPU memory allocated.
3. `memory_vs_plan`: the planner's memory for that same shape (orchestrator/plan/model.py `train_memory`) beside
   phase 2's measured peak, given as a ratio.
4. `load_rss`: the sharded ZeRO-3 load of phase 1's checkpoint (workers/train/load.py): host peak RSS beyond the rank's
   partitions (bench/load_memory.py's measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "gpu_check.json"
# dense bf16 tensor-core peak, TFLOP/s (NVIDIA's data sheets; H200 is H100's chip with more memory)
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
DENSE_LEVER = "chunks_mb16"  # bench/trainer_gpu.py LEVERS: answer-chunk loss, micro-batch 16, ZeRO-0
MEMBERS = ((1e-4, 0), (3e-4, 1))


def peak_tflops(device: str) -> float | None:
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device), None)


def moe_spec(model_path: str, steps: int, batch: int, micro: int) -> Any:
    """The MoE default as a sweep trains it (one GPU here): attention, lm_head and expert LoRA, bf16, ZeRO-3,
    checkpointing."""
    from bench.gpu_moe_check import ATTENTION, EXPERT_PARAMETERS
    from workers.train.config import unplanned
    from workers.train.trainer import TrainSpec

    return TrainSpec(model_path=model_path, dtype="bfloat16", lora_target_modules=[*ATTENTION, "lm_head"], lr=1e-4,
                     seed=0, max_steps=steps, checkpoint_steps=[steps], max_seq_len=4096,
                     lora_expert_parameters=EXPERT_PARAMETERS, gradient_checkpointing=True,
                     train=unplanned(batch_size=batch, micro_batch_size=micro, zero_stage=3, state_every_s=0))


def train_member(spec_fields: dict[str, Any], words: int, out: str, packed: bool) -> dict[str, Any]:
    """One trial alone (`packed` False: the list holds one spec) or a pack of them, in this fresh process; the
    step losses of each and the wall time."""
    from bench.gpu_moe_check import examples
    from workers.train.config import TrainConfig
    from workers.train.pack_train import train_pack
    from workers.train.trainer import TrainSpec, train

    specs = [TrainSpec(**{**fields, "train": TrainConfig(**fields["train"])}) for fields in spec_fields]
    rows = examples(4 * specs[0].train.batch_size, words)
    losses: list[list[float]] = [[] for _ in specs]

    def hook(i: int):  # noqa: ANN202
        return lambda step, adapter, info: losses[i].extend(info.get("step_losses", []))

    clock: dict[str, float] = {}
    began = time.time()
    if packed:
        dirs = [Path(out, f"member_{i}") for i in range(len(specs))]
        train_pack(specs, rows, dirs, Path(out, "state"), [hook(i) for i in range(len(specs))], log=print,
                   timings=clock)
    else:
        train(specs[0], rows, Path(out), hook(0), log=print, timings=clock)
    return {"wall_s": round(time.time() - began, 2), "train_steps_s": round(clock["train_steps_s"], 3),
            "losses": losses}


# how far a packed member's adapter may sit from its trial alone, per tensor: |got - want| / |want| (Frobenius). Not
# elementwise: Adam's first steps move each element by about +-lr whatever its gradient's size, so an element whose
# gradient is near zero can flip sign with bf16 rounding (two ranks, or another kernel, sum in another order); a
# wrong member, route or gradient differs by ~1 or more (two runs seen on CPU: at most 0.06)
ADAPTER_TOLERANCE = 0.1


def compare_adapters(got_dir: Path, want_dir: Path) -> dict[str, Any]:
    """The largest relative (Frobenius) difference between two saved adapters' tensors, and whether every one is
    within ADAPTER_TOLERANCE with expert LoRA present."""
    from safetensors.torch import load_file

    got = load_file(got_dir / "adapter_model.safetensors")
    want = load_file(want_dir / "adapter_model.safetensors")
    if got.keys() != want.keys():
        return {"same_keys": False, "ok": False}
    worst = 0.0
    for key, w in want.items():
        worst = max(worst, float((got[key].float() - w.float()).norm()) / (float(w.float().norm()) or 1.0))
    experts = sum(".experts." in k for k in got)
    return {"same_keys": True, "tensors": len(got), "expert_tensors": experts, "max_rel_diff": round(worst, 5),
            "ok": worst <= ADAPTER_TOLERANCE and experts > 0}


def moe_pack_phase(model: Path, work: Path, steps: int, batch: int, micro: int, words: int,
                   deadline_s: float) -> dict[str, Any]:
    from bench.gpu_moe_check import in_fresh_process
    from eval.runfiles import step_name

    base = moe_spec(str(model), steps, batch, micro)
    specs = [asdict(replace(base, lr=lr, seed=seed)) for lr, seed in MEMBERS]
    result: dict[str, Any] = {"steps": steps, "batch": batch, "micro": micro, "members": len(specs)}
    member = "bench.gpu_check:train_member"
    for i, spec in enumerate(specs):
        result[f"alone_{i}"] = in_fresh_process(member, ([spec], words, str(work / f"alone_{i}"), False), work,
                                                deadline_s)
    result["pack"] = in_fresh_process(member, (specs, words, str(work / "pack"), True), work, deadline_s)
    if any("error" in result[k] for k in ("alone_0", "alone_1", "pack")):
        return result
    checks = []
    for i in range(len(specs)):
        adapter = Path("adapters") / step_name(steps)
        check = compare_adapters(work / "pack" / f"member_{i}" / adapter, work / f"alone_{i}" / adapter)
        alone, packed = result[f"alone_{i}"]["losses"][0], result["pack"]["losses"][i]
        diffs = [abs(a - b) / max(abs(a), 1e-9) for a, b in zip(alone, packed, strict=True)]
        check["max_loss_rel_diff"] = round(max(diffs), 5)
        check["ok"] = check["ok"] and check["max_loss_rel_diff"] <= 0.01
        checks.append(check)
    result["members_match"] = checks
    result["ok"] = all(c["ok"] for c in checks)
    return result


def planned_memory(shape_name: str, micro: int, seq: int, dtype: str) -> dict[str, float]:
    """The planner's bytes per GPU for bench/trainer_gpu.py's `shape_name` run at `micro` (one GPU, ZeRO-0, batch 32,
    answer-chunk loss of 4096 tokens, LoRA r8 on its targets): the summed tensors, and the total with fragmentation
    and overhead, in GiB."""
    from bench.trainer_gpu import BATCH, SHAPES
    from orchestrator.config import compose_config
    from orchestrator.plan.fit import Shape
    from orchestrator.plan.model import GIB, arch_of, param_counts, train_memory, trained_lora_params

    s = SHAPES[shape_name]
    arch = {"num_layers": s["num_hidden_layers"], "hidden_size": s["hidden_size"],
            "num_heads": s["num_attention_heads"], "num_kv_heads": s["num_key_value_heads"], "head_dim": s["head_dim"],
            "intermediate_size": s["intermediate_size"], "vocab_size": s["vocab_size"],
            "tie_word_embeddings": str(s["tie_word_embeddings"]).lower(), "total_params_b": 0, "active_params_b": 0}
    cfg = compose_config(["model=qwen3_0_6b", *(f"model.arch.{k}={v}" for k, v in arch.items()),
                          f"model.max_model_len={seq}", "model.gradient_checkpointing=false", f"model.dtype={dtype}",
                          f"model.lora_target_modules=[{','.join(s['targets'])}]", "train.lora_rank=8"])
    a = arch_of(cfg)
    mem = train_memory(cfg, a, param_counts(a), trained_lora_params(cfg, a),
                       Shape(gpus=1, stage=0, micro=micro, accum=BATCH // micro, chunk=4096, hpz=1, pack=1))
    tensors = sum(v for k, v in mem.items() if k not in ("total", "resident"))
    return {"tensors_gib": round(tensors / GIB, 3), "total_gib": round(mem["total"] / GIB, 3)}


def dense_phase(shape_name: str, dtype: str, seq: int, answer: int, peak: float | None,
                deadline_s: float) -> dict[str, Any]:
    from bench.trainer_gpu import LEVERS, measure

    row = measure(shape_name, [DENSE_LEVER], 3, 2, dtype, seq, answer, peak or 1.0, int(deadline_s))[0]
    if peak is None:
        row["mfu"] = None  # no bf16 peak known for this device (CPU): tokens/s only
    row["micro"] = LEVERS[DENSE_LEVER]["micro_batch_size"]
    return row


def memory_phase(dense: dict[str, Any], shape_name: str, seq: int, dtype: str) -> dict[str, Any]:
    plan = planned_memory(shape_name, dense.get("micro", 16), seq, dtype)
    measured = dense.get("peak_memory_gib")
    return {"planned": plan, "measured_peak_allocated_gib": measured,
            "measured_over_planned_tensors": round(measured / plan["tensors_gib"], 3) if measured else None}


class Report:
    """The run's JSON file, rewritten after every phase."""

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.data = path, head
        path.parent.mkdir(parents=True, exist_ok=True)

    def phase(self, name: str, run: Any) -> Any:
        began = time.time()
        try:
            value = run()
        except Exception as err:  # a failed phase is a result; the later ones still run
            value = {"error": f"{type(err).__name__}: {err}"}
        if isinstance(value, dict):
            value["phase_s"] = round(time.time() - began, 1)
        self.data[name] = value
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")
        print(f"[gpu_check] {name}: {json.dumps(value)[:400]}", flush=True)
        return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="toy shapes on CPU/gloo (what CI runs)")
    ap.add_argument("--layers", type=int, default=2, help="MoE layers of Qwen3-30B-A3B's shape")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lrsweep-gpu-check"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch

    from bench.gpu_moe_check import SHAPES, build_checkpoint, in_fresh_process

    cuda = torch.cuda.is_available()
    if not args.cpu_smoke and not cuda:
        raise SystemExit("no CUDA device: run with --cpu-smoke on CPU, or on the lent GPU (docs/gpu.md)")
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    smoke = args.cpu_smoke
    moe, dense = ("smoke", "tiny") if smoke else ("30b_a3b", "dense")
    steps, batch, micro, words = (2, 2, 1, 8) if smoke else (3, 8, 4, 120)
    seq, answer, dtype = (64, 16, "float32") if smoke else (512, 128, "bfloat16")
    deadline = 90 if smoke else 150
    args.work.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, {"device": device, "torch": torch.__version__, "python": sys.version.split()[0],
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "bf16_peak_tflops": peak_tflops(device), "moe_shape": moe, "dense_shape": dense})
    model = args.work / f"{moe}_l{args.layers}"
    if not (model / "config.json").exists():
        report.phase("checkpoint", lambda: build_checkpoint(model, SHAPES[moe], args.layers,
                                                            64 * 2**10 if smoke else 2**30))
    report.phase("moe_pack", lambda: moe_pack_phase(model, args.work / f"pack_{time.time_ns()}", steps, batch, micro,
                                                    words, deadline))
    row = report.phase("dense_mfu", lambda: dense_phase(dense, dtype, seq, answer, peak_tflops(device), deadline))
    report.phase("memory_vs_plan", lambda: memory_phase(row, dense, seq, dtype))
    report.phase("load_rss", lambda: in_fresh_process("load_once", (str(model), "build_model",
                                                                    str(args.work / "load")), args.work, deadline))
    return report.data


if __name__ == "__main__":
    main()
