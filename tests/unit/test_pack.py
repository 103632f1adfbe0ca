"""Packed LoRA trials (workers/train/packed.py), without training: the routed LM-head layer gives each row its own
slot's update and every slot a gradient; a pack refuses what it cannot train before any compute and takes LoRA on
lm_head. Packs trained on 2 gloo ranks against each trial alone: tests/integration/test_pack_ranks.py."""

import pytest


def test_a_routed_head_gives_each_row_its_own_slots_update_and_every_slot_a_gradient():
    """PackedLoraLinear with token_slots (rows in any order, any count per slot, none for some) equals each row
    through its own slot's (A, B) alone; a slot with no rows in the call still gets a (zero) gradient, so under
    ZeRO-3 every rank reduces the same parameters whatever its tokens."""
    import torch

    from workers.train.packed import PackedLoraLinear, Route

    torch.manual_seed(0)
    route = Route(slots=[0, 2, 3])
    layer = PackedLoraLinear(torch.nn.Linear(6, 10, bias=False), "lm_head", [0, 1, 2, 3], rank=2, alpha=8,
                             route=route)
    for slot in range(4):
        torch.nn.init.normal_(layer.slot_params(slot)[1])
    x = torch.randn(7, 6)
    token_slots = torch.tensor([2, 0, 2, 2, 0, 0, 2])  # positions in route.slots: slot 3, slot 0; slot 2 has none
    y = layer(x, token_slots=token_slots)
    for row, position in enumerate(token_slots.tolist()):
        a, b = layer.slot_params(route.slots[position])
        torch.testing.assert_close(y[row], layer.base(x[row]) + layer.scaling * (b @ (a @ x[row])))
    y.sum().backward()
    a2, b2 = layer.slot_params(2)
    assert a2.grad is not None and b2.grad is not None and not a2.grad.any() and not b2.grad.any()
    assert layer.slot_params(3)[1].grad.any() and layer.slot_params(1)[0].grad is None  # 1: not in the route
    empty = layer(x[:0], token_slots=token_slots[:0])  # a padding chunk: no rows at all
    assert empty.shape == (0, 10)


@pytest.mark.parametrize("override, message", [
    ("train.loss=hf", "packed trials need train.loss=answer_chunks"),
    ("train.lora_dropout=0.1", "packed trials need train.lora_dropout=0"),
])
def test_a_pack_refuses_what_it_cannot_train_before_compute(override, message):
    from orchestrator.config import compose_config
    from orchestrator.run.sweep import check_before_compute
    from orchestrator.schema import ConfigError

    with pytest.raises(ConfigError, match=f"sweep.pack=2: .*{message}.*or set sweep.pack=1"):
        check_before_compute(compose_config(["sweep.lrs=[1e-3,3e-3]", "sweep.pack=2", override]))
    check_before_compute(compose_config(["sweep.lrs=[1e-3,3e-3]", "sweep.pack=1", override]))  # alone: fine


def test_a_pack_takes_lora_on_lm_head():
    from orchestrator.config import compose_config
    from orchestrator.run.sweep import check_before_compute

    check_before_compute(compose_config(["sweep.lrs=[1e-3,3e-3]", "sweep.pack=2",
                                         "model.lora_target_modules=[q_proj,lm_head]"]))
