"""The resource planner against cases worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import auto_dtype, available, compose_config
from orchestrator.plan.model import trials_that_fit
from orchestrator.plan.planner import (
    GIB,
    PlanError,
    lora_params,
    make_plan,
    param_counts,
    resolve_zero_stage,
    trainer_shape,
)
from orchestrator.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
H100_NODES = ["cluster.gpus_per_node=8", "cluster.gpu_memory_gib=80", "cluster.kind=slurm", "cluster.partition=gpu"]
# attention-only LoRA (the model's default before it followed Tinker's): the case worked out by hand below;
# tests/unit/test_resolve.py has the default, attention + lm_head + experts
ATTENTION_ONLY = ["model.lora_experts=false", "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj]"]
# the loss chunk pinned at 4096 tokens and each trial alone: the case worked out by hand before the planner searched
# chunks and packs (tests/unit/test_plan_levers.py has the search)
# (one budget for every LR, sweep=toy, and 48-token answers)
SWEEP_235B = ["model=qwen3_235b_a22b", "sweep=toy", "model.max_new_tokens=48", *ATTENTION_ONLY, "sweep.pack=1",
              "sweep.lrs=[3e-5,1e-4,3e-4,1e-3]", "sweep.max_concurrent_trials=4", "sweep.max_steps=256",
              "cluster.nodes=9",
              "train.loss_chunk_tokens=4096",
              *H100_NODES]


@pytest.mark.parametrize("model", [m for m in available("model") if m != "toy"])
def test_real_model_configs_compose_and_match_their_published_size(model):
    cfg = compose_config([f"model={model}"])
    a = cfg.model.arch
    qwen3 = {"enable_thinking": False}  # Qwen3's template: answer directly; SmolLM2's takes no switches
    # SmolLM2, the CPU model, takes model.dtype=auto: bfloat16 only where this CPU computes in bf16 natively
    assert cfg.model.dtype == ("bfloat16" if model != "smollm2_135m" else auto_dtype(0))
    assert cfg.model.chat_template_kwargs == (qwen3 if "qwen3" in model else {})
    counts = param_counts(a)
    assert counts["total"] == pytest.approx(a.total_params_b * 1e9, rel=0.02)
    assert counts["active"] == pytest.approx(a.active_params_b * 1e9, rel=0.02)


def test_qwen3_235b_parameter_and_lora_counts_by_hand():
    a = compose_config(["model=qwen3_235b_a22b"]).model.arch
    counts = param_counts(a)
    # attention: 4096*8192*2 (q, o) + 4096*512*2 (k, v) + norms 2*4096 + 2*128 = 71,311,616
    assert counts["attention_per_layer"] == 71_311_616
    # layer: attention + experts 128*3*4096*1536 (2,415,919,104) + router 128*4096 (524,288) = 2,487,755,008
    assert counts["layer"] == 2_487_755_008
    # total: 94 layers + untied embeddings 2*151936*4096 (1,244,659,712) + final norm 4096 = 235,093,634,560
    assert counts["total"] == 235_093_634_560
    # active: 94*(71,311,616 + 524,288 + 8*18,874,368) + 1,244,659,712 + 4096 = 22,190,763,520
    assert counts["active"] == 22_190_763_520
    lora = lora_params(a, ["q_proj", "k_proj", "v_proj", "o_proj"], ["mlp.experts.gate_up_proj",
                                                                      "mlp.experts.down_proj"], rank=8)
    # attention: 8*[(4096+8192) + 2*(4096+512) + (8192+4096)] = 270,336 per layer, x94 = 25,411,584
    assert lora["attention"] == 25_411_584
    # experts: 8*128*[(4096 + 2*1536) + (1536 + 4096)] = 13,107,200 per layer, x94 = 1,232,076,800 (48x attention)
    assert lora["experts"] == 1_232_076_800


@pytest.mark.parametrize(
    "per_node, nodes, trial, sampler, expected",
    [
        (8, 9, 16, 8, 4),  # node 0 is the sampler's; 8 free nodes in pairs
        (8, 2, 16, 8, 0),
        (8, 1, 2, 2, 3),  # 6 free GPUs in blocks of 2
        (8, 2, 4, 2, 3),  # node 0: 6 free -> 1 trial; node 1: 2 trials
        (8, 3, 24, 0, 1),
    ],
)
def test_trials_that_fit(per_node, nodes, trial, sampler, expected):
    assert trials_that_fit(per_node, nodes, trial, sampler) == expected


def test_qwen3_235b_on_h100_nodes_by_hand():
    plan = make_plan(compose_config(SWEEP_235B)).sections
    tr, sa, pl, ti = plan["trainer"], plan["sampler"], plan["placement"], plan["time"]
    # 8 GPUs are not enough (ZeRO-3, micro-batch 1, seq 2048): weights 470,187,269,120/8 = 58,773,408,640
    # + 2 gathered layers 2*2,487,755,008*2 = 9,951,020,032 + checkpoints 94*2048*4096*2 = 1,577,058,304
    # + 2 working layers 2*2048*129,280*2 = 1,059,061,760 + logits 2048*151936*10 = 3,111,649,280
    # + LoRA 25,411,584*(2+2+12)/8 = 50,823,168 -> 74,523,021,184 B x 1.1 + 4 GiB = 80.35 GiB > 80.
    # 16 GPUs (2 nodes), 2 sequences each:
    assert (tr["gpus_per_trial"], tr["zero_stage"], tr["micro_batch_per_gpu"], tr["grad_accum_steps"]) == (16, 3, 2, 1)
    # weights 470,187,269,120/16 = 29,386,704,320 B = 27.37 GiB
    assert tr["base_weights_gib"] == pytest.approx(29_386_704_320 / GIB, abs=1e-3)
    # checkpoints 94*4096 tokens*4096*2 = 3,154,116,608 + 2*4096*129,280*2 = 2,118,123,520 -> 5,272,240,128 B
    # (129,280 = 2*4096 + 2*(64+2*4)*128 + 8*(2*4096 + 3*1536) + 2*128 elements per token)
    assert tr["activations_gib"] == pytest.approx(5_272_240_128 / GIB, abs=1e-3)
    # logits 4096*151936*(2+4+4) = 6,223,298,560 B
    assert tr["logits_gib"] == pytest.approx(6_223_298_560 / GIB, abs=1e-3)
    # DeepSpeed buffers set from the plan (plan_model.zero_buffers): the gradient bucket, the whole LoRA
    # 25,411,584 x 2 B = 50,823,168, and the persisted norms 94*(2*4096 + 2*128) + 4096 = 798,208 x 2 B = 1,596,416
    assert tr["zero_buffers"]["reduce_bucket_size"] == 25_411_584
    assert tr["zero_buffers"]["stage3_model_persistence_threshold"] == 798_208
    assert tr["zero_buffers_gib"] == pytest.approx(52_419_584 / GIB, abs=1e-3)
    # sum 29,386,704,320 + 25,411,584 + 9,951,020,032 + 5,272,240,128 + 6,223,298,560 + 52,419,584 = 50,911,094,208
    # x 1.1 + 4 GiB = 60,297,170,925 B = 56.16 GiB (56.10 before the buffers were counted)
    assert tr["memory_per_gpu_gib"] == pytest.approx(56.16, abs=0.01)
    # sampler: TP4 would hold 117,546,817,280 B of weights > 0.9*80 GiB; TP8: 58,773,408,640 B per GPU,
    # KV room 0.9*80 GiB - 58,773,408,640 - 4 slots*50,823,168/8 - 6 GiB = 12,068,140,160 B;
    # per token 2*94 layers*1 kv head*128*2 B = 48,128; 12,068,140,160 // (48,128*304) = 824 sequences
    assert (sa["tensor_parallel_size"], sa["fully_sharded_loras"], sa["max_lora_rank"]) == (8, True, 8)
    assert sa["kv_cache_sequences"] == 824
    assert sa["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    # placement: node 0 for the sampler, 8 nodes / 2 per trial = 4 trials at once
    assert (pl["trials_that_fit"], pl["concurrent_trials"], pl["max_loras"], pl["max_cpu_loras"]) == (4, 4, 4, 8)
    # time: compute 6*22,190,763,520*65,536 / (16*989e12*0.25) = 2.206 s; all-gathers 3*470,187,269,120*15/16
    # / 40e9 = 33.06 s -> a step is communication-bound; trial (235.1 s load + 256*33.06 s) = 2.416 h
    assert ti["compute_s"] == pytest.approx(2.206, abs=1e-3)
    assert ti["communication_s"] == pytest.approx(33.06, abs=0.01)
    assert ti["trial_h"] == pytest.approx(2.416, abs=1e-3)
    # one wave of 4 trials; 9 nodes x 8 GPUs x 2.416 h = 174 GPU-hours
    assert ti["wall_h"] == pytest.approx(2.416, abs=1e-3)
    assert ti["allocation_gpu_h"] == pytest.approx(173.97, abs=0.05)


def test_expert_lora_multiplies_the_adapter_and_the_sampler_slots():
    base = make_plan(compose_config(SWEEP_235B)).sections
    experts = make_plan(compose_config([*SWEEP_235B, "model.lora_experts=true"])).sections
    # slot = LoRA params at rank 8 x 2 B: 25,411,584*2 vs (25,411,584 + 1,232,076,800)*2
    assert base["sampler"]["lora_slot_gib"] == pytest.approx(50_823_168 / GIB, abs=1e-3)
    assert experts["sampler"]["lora_slot_gib"] == pytest.approx(2_514_976_768 / GIB, abs=1e-3)
    assert experts["sampler"]["lora_target_modules"][-1] == "experts"


def test_235b_on_one_node_fits_with_a_smaller_loss_chunk_and_is_refused_without_it():
    """Before: refused at 80.35 GiB per GPU over one node (a 4096-token loss chunk holds 2048 tokens' logits at
    micro-batch 1: 3.1 GB). The plan now lowers the chunk to 1024 tokens (1,555,824,640 B of logits): 78.81 GiB with
    DeepSpeed's buffers (78.75 without). At the card's edge (plan.headroom=0): with the default 8% left free (73.6 GiB)
    no chunk fits 8 GPUs and the trial takes two nodes (tests/unit/test_plan_levers.py prices that)."""
    edge = ["plan.headroom=0"]
    cfg = compose_config(["model=qwen3_235b_a22b", *ATTENTION_ONLY, "cluster.nodes=2", *H100_NODES, "sweep.pack=1",
                          *edge])
    tr = make_plan(cfg).sections["trainer"]
    assert (tr["gpus_per_trial"], tr["micro_batch_per_gpu"], tr["loss_chunk_tokens"]) == (8, 1, 1024)
    assert tr["memory_per_gpu_gib"] == pytest.approx(78.81, abs=0.01)
    # the chunk pinned: at best 80.35 GiB over the node's 8 GPUs (see above) > 80, and the fix names the lever
    with pytest.raises(PlanError, match=r"does not fit with train.num_workers=8, train.loss_chunk_tokens=4096: at best "
                                        r"80\.\d GiB .*ZeRO-3 over 8 GPUs.*set train.num_workers=auto and "
                                        r"train.loss_chunk_tokens=auto \(the plan: 8 GPUs per trial"):
        make_plan(compose_config([*("model=qwen3_235b_a22b", *ATTENTION_ONLY, "cluster.nodes=2", *H100_NODES),
                                  "train.loss_chunk_tokens=4096", "train.num_workers=8", "sweep.pack=1", *edge]))


def test_no_room_beside_the_sampler_is_refused_naming_the_node_count():
    # 2 nodes: the sampler's TP8 takes node 0, a 16-GPU trial needs 2 free nodes -> 3 nodes
    with pytest.raises(PlanError, match="set cluster.nodes=3"):
        make_plan(compose_config(["model=qwen3_235b_a22b", "cluster.nodes=2", *H100_NODES]))


def test_explicit_unsharded_stage_that_cannot_fit_is_refused():
    # ZeRO-0 keeps all 470 GB on every GPU
    with pytest.raises(PlanError, match="train.zero_stage=auto"):
        make_plan(compose_config(["model=qwen3_235b_a22b", "cluster.nodes=9", "train.zero_stage=0", *H100_NODES]))


@pytest.mark.parametrize("loss, micro", [("hf", 8), ("answer_chunks", 16)])
def test_a_model_that_fits_one_gpu_is_not_sharded(loss, micro):
    # Qwen3-0.6B on one local GPU shared with vLLM (0.4 of it): weights 596,050,944*2 B = 1.11 GiB.
    # train.loss=hf: micro-batch 32 needs ~46 GiB of logits alone, so the plan halves it until it fits 0.6*80 GiB;
    # answer_chunks holds one chunk's logits: at 4096 tokens (~5.8 GiB) micro-batch 16 fits; micro-batch 32 (the
    # whole batch, chunk 1024) fitted 0.6 x 80 GiB but not 0.6 x 73.6 GiB, what plan.headroom (8%) leaves
    cfg = compose_config(["model=qwen3_0_6b", "cluster.gpus_per_node=1", "sample.engine.gpu_memory_utilization=0.4",
                          f"train.loss={loss}", "sweep.pack=1"])
    shape = trainer_shape(cfg)
    assert (shape["gpus"], shape["stage"], shape["micro"], shape["accum"]) == (1, 0, micro, 32 // micro)
    assert resolve_zero_stage(cfg) == 0


@pytest.mark.parametrize(
    "overrides, stage",
    [([], 0), (["train.zero_stage=3"], 3), (["train.zero_stage=2"], 2),
     (["model=qwen3_235b_a22b", "cluster.nodes=3", *H100_NODES], 3)],
)
def test_resolve_zero_stage(overrides, stage):
    assert resolve_zero_stage(compose_config(overrides)) == stage


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.zero_stage=4"], "must be one of auto, 0, 1, 2, 3"),
        (["train.loss=mean"], "must be one of answer_chunks, hf"),
        (["train.loss_chunk_tokens=0"], "loss_chunk_tokens=0: must be auto \\(the plan's\\) or >= 1"),
        (["train.compile=true", "train.zero_stage=3"], "set train.compile=false"),
        (["model.lora_experts=true"], "has no experts"),
        (["model=qwen3_30b_a3b", "model.lora_experts=true", "train.lora_dropout=0.1"], "lora_dropout=0"),
        (["model=qwen3_30b_a3b", "model.lora_experts=true", "model.lora_expert_parameters=[]"],
         "needs model.lora_expert_parameters"),
        (["model=qwen3_30b_a3b", "model.dtype=int8"], "model.dtype"),
    ],
)
def test_bad_model_options_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(override)


def test_rank_beyond_vllm_is_refused():
    with pytest.raises(PlanError, match="exceeds vLLM's largest max_lora_rank 512"):
        make_plan(compose_config(["model=qwen3_235b_a22b", "train.lora_rank=1024", "cluster.nodes=3", *H100_NODES]))


def test_plan_cli_prints_json_and_refuses_with_exit_code():
    run = lambda *args: subprocess.run([sys.executable, "-m", "orchestrator", "plan", *args], cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    ok = run("--json", *SWEEP_235B)
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)
    assert plan["trainer"]["gpus_per_trial"] == 16 and plan["arithmetic"]
    text = run(*SWEEP_235B)
    assert "memory_per_gpu_gib = sum x fragmentation 1.1 + overhead 4 GiB = 56.16 GiB of 73.6 GiB" in text.stdout
    assert "usable_per_gpu_gib = 80 GiB x (1 - headroom 0.08) = 73.60 GiB" in text.stdout
    refused = run("model=qwen3_235b_a22b", "cluster.nodes=2", *H100_NODES)
    assert refused.returncode == 1 and "set cluster.nodes=3" in refused.stderr


def test_local_gpu_shared_with_vllm_leaves_less_room():
    # one local 24 GiB GPU, vLLM takes 0.5 of it: Qwen3-0.6B at micro-batch 1 needs weights 1.11 GiB +
    # logits 1024*151936*10 B = 1.45 GiB + ... x1.1 + 4 GiB overhead, which fits 12 GiB; at 0.9 it does not (2.4 GiB)
    fits = trainer_shape(compose_config(["model=qwen3_0_6b", "cluster.gpus_per_node=1", "cluster.gpu_memory_gib=24",
                                         "sample.engine.gpu_memory_utilization=0.5"]))
    assert fits["gpus"] == 1 and fits["stage"] == 0
    with pytest.raises(PlanError, match="left beside vLLM"):
        trainer_shape(compose_config(["model=qwen3_0_6b", "cluster.gpus_per_node=1", "cluster.gpu_memory_gib=24",
                                      "sample.engine.gpu_memory_utilization=0.9"]))


def test_more_workers_than_sequences_is_refused():
    with pytest.raises(ConfigError, match="split evenly over train.num_workers=8"):  # refused while composing
        trainer_shape(compose_config(["model=qwen3_0_6b", "cluster.gpus_per_node=8", "train.batch_size=4",
                                      "train.micro_batch_size=4", "train.num_workers=8", "cluster.kind=slurm"]))


def test_compile_is_refused_when_the_plan_shards_with_zero3():
    """zero_stage=auto resolves to 3 for a model that does not fit one GPU: compile is refused there too."""
    from orchestrator.run.build import build_train_spec

    cfg = compose_config(["model=qwen3_235b_a22b", "cluster.nodes=3", *H100_NODES, "train.compile=true"])
    assert resolve_zero_stage(cfg) == 3
    with pytest.raises(ValueError, match="train.compile=false"):
        build_train_spec(cfg, "/models/qwen3", 1e-4, 0)
    cfg = compose_config(["model=qwen3_0_6b", "cluster.gpus_per_node=1", "train.compile=true"])
    assert build_train_spec(cfg, "/models/qwen3", 1e-4, 0).train.compile
