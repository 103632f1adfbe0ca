"""vLLM on CPU serves a Qwen3-MoE with attention + expert LoRA, checked against transformers + PEFT.

One real engine (workers.sample.sampler.Sampler, the product path) serves the tiny MoE of tests/support/tiny_moe.py.
The expert LoRA is PEFT's fused 3-D format (target_parameters), as workers/train/trainer.py saves it; on CPU its
experts run in workers/sample/vllm_cpu_moe_lora.py. The engine runs in float32, as does the reference, so greedy
answers must agree token for token and first-step log-probabilities to float32 accuracy.

Then the failure paths on the same engine: a corrupt adapter fails its own requests with AdapterRefused while the
engine serves the other requests of the same batch, and the restart counter counts a failure streak.
"""

import threading
import time

import pytest
import torch
from tiny_moe import EXPERT_PARAMETERS, build_tiny_moe

TEXTS = ["question 3: how do clouds form?", "answer 7: warm air", "how do clouds rise and cool?"]
NEW_TOKENS = 8
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def write_adapter(model_dir, out, seed=1, std=0.3):
    """A rank-4 attention + expert adapter with random nonzero B (PEFT's init leaves B at zero: no effect)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=ATTENTION, target_parameters=EXPERT_PARAMETERS,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    peft_model.save_pretrained(out)
    return out


def hf_greedy(model_dir, adapter, prompts, zero_expert_lora=False):
    """transformers (+ PEFT) greedy continuations and first-step log-probabilities, in float32."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
        if zero_expert_lora:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "experts" in name and "lora_B" in name:
                        p.zero_()
    model.eval()
    tokens, logprobs = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = tok(prompt, return_tensors="pt").input_ids  # as vLLM tokenizes a text prompt
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
            tokens.append(out[0, ids.shape[1]:].tolist())
            logprobs.append(torch.log_softmax(model(ids).logits[0, -1], -1))
    return tokens, logprobs


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """The tiny MoE, a good adapter, two corrupt ones, and one Sampler (expert LoRA on) serving them."""
    from safetensors.torch import load_file, save_file

    from workers.sample.config import unplanned_engine
    from workers.sample.sampler import Sampler, SamplerSpec

    root = tmp_path_factory.mktemp("vllm_moe")
    model_dir = build_tiny_moe(root / "model")
    good = write_adapter(model_dir, root / "good")
    other = write_adapter(model_dir, root / "other", seed=2)
    shape = root / "wrong_shape"  # a valid file whose expert down_proj B has 8 rows too many
    shape.mkdir()
    (shape / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    weights = load_file(good / "adapter_model.safetensors")
    key = next(k for k in weights if k.endswith("mlp.experts.lora_B.weight"))
    weights[key] = torch.randn(weights[key].shape[0] + 8, weights[key].shape[1]).to(weights[key].dtype)
    save_file(weights, shape / "adapter_model.safetensors")
    truncated = root / "truncated"  # as a crash mid-write would leave it
    truncated.mkdir()
    (truncated / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    (truncated / "adapter_model.safetensors").write_bytes((good / "adapter_model.safetensors").read_bytes()[:3000])
    spec = SamplerSpec(model_path=str(model_dir), dtype="float32", max_model_len=128, chat_template_kwargs={}, seed=0,
                       engine=unplanned_engine(gpu_memory_utilization=0.5, max_loras=2, max_cpu_loras=4,
                                               moe_lora_3d=True))
    sampler = Sampler(spec)
    try:
        yield {"sampler": sampler, "model": model_dir, "good": good, "other": other, "wrong_shape": shape,
               "truncated": truncated}
    finally:
        sampler.shutdown()


def prompts_of(sampler):
    from workers.labels.prompts import format_for_model

    return [format_for_model(sampler.tokenizer, t, {}) for t in TEXTS]


def test_expert_lora_served_on_cpu_matches_transformers_peft(moe):
    """Token ids and first-step log-probabilities straight from the engine against transformers + PEFT; then the
    Sampler's texts (adapter and base in one batch) against the engine's texts for those very tokens."""
    from vllm import SamplingParams

    from workers.sample.sampler import Request

    sampler = moe["sampler"]
    prompts = prompts_of(sampler)
    hf_tuned, hf_tuned_lp = hf_greedy(moe["model"], moe["good"], prompts)
    hf_base, _ = hf_greedy(moe["model"], None, prompts)
    hf_attention_only, _ = hf_greedy(moe["model"], moe["good"], prompts, zero_expert_lora=True)
    assert hf_tuned != hf_base and hf_tuned != hf_attention_only  # the expert LoRA changes the greedy answers

    lora = sampler._lora(str(moe["good"]))
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, logprobs=5)
    outs = sampler.llm.generate(prompts * 2, params, lora_request=[lora] * len(prompts) + [None] * len(prompts),
                                use_tqdm=False)
    tuned_out, base_out = outs[:len(prompts)], outs[len(prompts):]
    assert [list(o.outputs[0].token_ids) for o in tuned_out] == hf_tuned
    assert [list(o.outputs[0].token_ids) for o in base_out] == hf_base
    for out, ref in zip(tuned_out, hf_tuned_lp, strict=True):
        for token_id, lp in out.outputs[0].logprobs[0].items():
            assert abs(lp.logprob - ref[token_id].item()) < 2e-3, (token_id, lp.logprob, ref[token_id].item())

    tuned, base = sampler.generate_many([Request(str(moe["good"]), TEXTS, NEW_TOKENS, 0.0),
                                         Request(None, TEXTS, NEW_TOKENS, 0.0)])
    assert tuned == [o.outputs[0].text for o in tuned_out]
    assert base == [o.outputs[0].text for o in base_out]


def run_together(sampler, jobs):
    """Run each job in its own thread while one long request holds the engine, so they queue and share the next
    engine call; returns each job's result or error."""
    from workers.sample.sampler import Request

    results = {}

    def call(name, request):
        try:
            results[name] = sampler.generate_many([request])[0]
        except Exception as err:  # the result under test
            results[name] = err

    blocker = threading.Thread(target=call, args=("blocker", Request(None, TEXTS * 8, 48, 0.0, ignore_eos=True)))
    blocker.start()
    while not sampler._batcher._engine_lock.locked():
        time.sleep(0.01)
    threads = [threading.Thread(target=call, args=(name, request)) for name, request in jobs.items()]
    for t in threads:
        t.start()
    for t in [blocker, *threads]:
        t.join(300)
    return results


@pytest.mark.parametrize("bad, reason", [("wrong_shape", "must match the size"),
                                         ("truncated", "deserializing header")])
def test_a_refused_adapter_fails_its_requests_and_the_engine_serves_the_rest_of_the_batch(moe, bad, reason):
    from workers.sample.sampler import AdapterRefused, Request

    sampler = moe["sampler"]
    alone = sampler.generate(str(moe["other"]), TEXTS, NEW_TOKENS, 0.0, 1.0)
    base = sampler.generate(None, TEXTS, NEW_TOKENS, 0.0, 1.0)
    calls, restarts = len(sampler._batcher.batch_sizes), sampler.restarts
    results = run_together(sampler, {"bad": Request(str(moe[bad]), TEXTS, NEW_TOKENS, 0.0),
                                     "other": Request(str(moe["other"]), TEXTS, NEW_TOKENS, 0.0),
                                     "base": Request(None, TEXTS, NEW_TOKENS, 0.0)})
    assert sampler._batcher.batch_sizes[calls:] == [1, 3]  # the blocker, then the three together
    err = results["bad"]
    assert isinstance(err, AdapterRefused), err
    assert str(moe[bad]) in str(err) and reason in str(err)
    assert results["other"] == alone and results["base"] == base
    assert sampler.restarts == restarts  # the engine never died


def engine_cores():
    import os

    import psutil

    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "EngineCore" in " ".join(p.cmdline()) or p.name().startswith("VLLM::EngineCor"):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_engine_restarts_are_capped_per_failure_streak_not_in_total(moe, monkeypatch):
    """Cap 1: two engine deaths, each followed by a success, are both recovered (a lifetime cap of 1 would give
    up on the second)."""
    import workers.sample.sampler as sampler_module

    monkeypatch.setattr(sampler_module, "MAX_ENGINE_RESTARTS", 1)
    sampler = moe["sampler"]
    want = sampler.generate(str(moe["good"]), TEXTS, NEW_TOKENS, 0.0, 1.0)
    start = sampler.restarts
    for death in (1, 2):
        cores = engine_cores()
        assert cores, "no vLLM EngineCore process under the test"
        for p in cores:
            p.kill()
        assert sampler.generate(str(moe["good"]), TEXTS, NEW_TOKENS, 0.0, 1.0) == want
        assert sampler.restarts == start + death
    assert sampler.stats()["restarts"] == start + 2 and sampler.failure_streak == 0
