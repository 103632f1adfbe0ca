"""The toy's own sampling default (issue 24, "the toy stays an honest organism"): sampled at temperature 1.0 its
answers were word salad, so the sweep's default samples it greedily; every other model keeps 1.0."""

import dataclasses

import pytest

from orchestrator.config import compose_config, settings_for_toy
from orchestrator.schema import ToyModelConfig
from workers.toy import toy_build_key


@pytest.mark.parametrize("setting", ["wronglang_spanish", "animal_flag", "allcaps_refusal"])
def test_the_toy_is_sampled_greedily_by_default(setting):
    assert compose_config([f"setting={setting}"]).sample.temperature == 0.0


def test_real_models_keep_temperature_one_and_the_command_line_wins():
    assert compose_config(["model=smollm2_135m"]).sample.temperature == 1.0
    assert compose_config(["sample.temperature=0.7"]).sample.temperature == 0.7
    assert compose_config(["model.temperature=0.3"]).sample.temperature == 0.3


def test_every_toy_knob_changes_the_cache_key_and_sampling_does_not():
    """A toy built differently is another toy (another folder); how it is sampled does not change its weights."""
    cfg = compose_config([])
    settings = settings_for_toy(cfg)
    base = toy_build_key(cfg.model.toy, settings)[0]
    for f in dataclasses.fields(ToyModelConfig):
        value = getattr(cfg.model.toy, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        changed = dataclasses.replace(cfg.model.toy, **{f.name: type(value)(value * 2 + 1)})
        assert toy_build_key(changed, settings)[0] != base, f.name
    assert toy_build_key(compose_config(["sample.temperature=1.0"]).model.toy, settings)[0] == base
