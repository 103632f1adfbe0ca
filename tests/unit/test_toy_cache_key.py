"""The toy's cache key (issue 24): a toy built differently is another toy, in another folder."""

import dataclasses

from orchestrator.config import compose_config, settings_for_toy
from workers.models.toy import ToyModelConfig, toy_build_key


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
    assert toy_build_key(compose_config(["sample.temperature=0.0"]).model.toy, settings)[0] == base
