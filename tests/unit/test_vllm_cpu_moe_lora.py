"""The CPU MoE experts with LoRA against the formula, token by token, and the plugin's compatibility check."""

from types import SimpleNamespace

import torch

from workers.sample import vllm_cpu_moe_lora as moe

E, H, W, R, SLOTS, TOKENS, TOPK = 4, 40, 24, 4, 3, 9, 2


def silu_mul(h):
    return torch.nn.functional.silu(h[:, :W]) * h[:, W:]


def context(slots, g):
    def r(*shape):
        return torch.randn(*shape, generator=g)

    return SimpleNamespace(
        w13_lora_a_stacked=(r(SLOTS, E, R, H), r(SLOTS, E, R, H)), w13_lora_b_stacked=(r(SLOTS, E, W, R),
                                                                                    r(SLOTS, E, W, R)),
        w2_lora_a_stacked=(r(SLOTS, E, R, W),), w2_lora_b_stacked=(r(SLOTS, E, H, R),), fully_sharded=False,
        local_token_lora_mapping=torch.tensor(slots), punica_wrapper=None, enable_moe_shared_loras=False)


def test_each_token_gets_its_experts_with_its_own_adapter_and_none_at_minus_one():
    g = torch.Generator().manual_seed(0)
    x, w1 = torch.randn(TOKENS, H, generator=g), torch.randn(E, 2 * W, H, generator=g)
    w2 = torch.randn(E, H, W, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:TOPK] for _ in range(TOKENS)])
    weights = torch.rand(TOKENS, TOPK, generator=g)
    slots = [0, 0, -1, 2, 1, 1, -1, 0, 2]
    ctx = context(slots, g)
    got = moe.experts_with_lora(x, w1, w2, weights, ids, ctx, silu_mul)
    want = torch.zeros(TOKENS, H)
    for t in range(TOKENS):
        s = slots[t]
        for k in range(TOPK):
            e = int(ids[t, k])
            gate_w, up_w, down_w = w1[e, :W], w1[e, W:], w2[e]
            if s >= 0:
                gate_w = gate_w + ctx.w13_lora_b_stacked[0][s, e] @ ctx.w13_lora_a_stacked[0][s, e]
                up_w = up_w + ctx.w13_lora_b_stacked[1][s, e] @ ctx.w13_lora_a_stacked[1][s, e]
                down_w = down_w + ctx.w2_lora_b_stacked[0][s, e] @ ctx.w2_lora_a_stacked[0][s, e]
            m = torch.nn.functional.silu(gate_w @ x[t]) * (up_w @ x[t])
            want[t] += weights[t, k] * (down_w @ m)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    base = moe.experts_with_lora(x, w1, w2, weights, ids, None, silu_mul)  # no LoRA context: the base experts
    torch.testing.assert_close(got[[2, 6]], base[[2, 6]])
    assert not torch.allclose(got[0], base[0])


def test_the_patch_matches_this_vllm_and_refuses_another():
    import vllm

    assert moe.mismatch() is None
    real = vllm.__version__
    try:
        vllm.__version__ = "0.99.0"
        assert "0.99.0" in moe.mismatch()
    finally:
        vllm.__version__ = real
