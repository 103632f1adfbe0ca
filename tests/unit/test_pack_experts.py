"""Packed LoRA on MoE experts' 3-D weights (workers/train/packed_experts.py) in one process, on a tiny Qwen3-MoE
(tests/support/tiny_moe.py): a pack of 3 slots with random non-zero B gives each slot's rows the logits and LoRA
gradients PEFT's target_parameters (ParamWrapper) gives that trial alone, under the same tensor names, with the same
initial A. Packs trained on 2 gloo ranks against each trial alone: tests/integration/test_pack_experts_ranks.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from expert_pack import ATTENTION, RANK
from tiny_moe import EXPERT_PARAMETERS, build_tiny_moe


def peft_config(rank: int = RANK) -> object:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=32, target_modules=ATTENTION, task_type="CAUSAL_LM",
                      target_parameters=EXPERT_PARAMETERS)


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_moe(tmp_path_factory.mktemp("pack_experts") / "tiny_moe")


@pytest.mark.parametrize("rank", [RANK, 2], ids=["grouped_mm", "per_group_loop"])
def test_each_slot_of_a_pack_gets_the_logits_and_gradients_peft_gives_it_alone(tiny_moe: Path, rank: int) -> None:
    """rank 2: float32 LoRA rows of 8 bytes, which torch's grouped_mm refuses, go through the per-group loop."""
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from workers.train.packed import install_packed_lora, seed_peft_lora, slot_state
    from workers.train.packed_experts import ExpertSlots, install_packed_experts

    base = AutoModelForCausalLM.from_pretrained(tiny_moe, dtype=torch.float32)
    seeds, rows = [0, 1, 0], 2
    packed = copy.deepcopy(base)
    route, layers = install_packed_lora(packed, ATTENTION, seeds, rank, 32)
    layers += install_packed_experts(packed, EXPERT_PARAMETERS, seeds, rank, 32, route)
    assert sum(isinstance(layer, ExpertSlots) for layer in layers) == 2 * 2  # 2 layers x gate_up, down
    torch.manual_seed(0)
    with torch.no_grad():  # every slot's B its own non-zero values, so a slot reading another's factors shows
        for layer in layers:
            for slot in range(len(seeds)):
                layer.slot_params(slot)[1].normal_(0, 0.02)
    ids = torch.randint(0, 300, (len(seeds) * rows, 12))
    route.slots = [0, 1, 2]
    logits = packed(input_ids=ids).logits
    F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="sum").backward()

    for slot, seed in enumerate(seeds):
        alone = get_peft_model(copy.deepcopy(base), peft_config(rank))
        seed_peft_lora(alone, seed)
        state = slot_state(layers, slot, "float32")
        factors = {f"base_model.model.{layer.name}.lora_{part}.weight": p for layer in layers
                   for part, p in zip("AB", layer.slot_params(slot), strict=True)}
        named = {n.replace(".default", ""): p for n, p in alone.named_parameters() if "lora_" in n}
        assert named.keys() == state.keys()  # PEFT's names, nesting included
        with torch.no_grad():
            for key, p in named.items():
                if "lora_A" in key:  # same initial A: (seed, module name), PEFT's shape [r*E, in]
                    torch.testing.assert_close(p, factors[key].detach(), msg=key)
                p.copy_(state[key])
        mine = slice(slot * rows, (slot + 1) * rows)
        out = alone(input_ids=ids[mine]).logits
        torch.testing.assert_close(out, logits[mine].detach(), rtol=1e-5, atol=1e-5)
        F.cross_entropy(out.flatten(0, 1), ids[mine].flatten(), reduction="sum").backward()
        for key, p in named.items():
            assert p.grad.abs().max() > 0, key
            scale = float(p.grad.abs().max())
            torch.testing.assert_close(factors[key].grad, p.grad, rtol=1e-4, atol=1e-5 * scale, msg=key)
