"""The toys kept in tests/data/toys (tests/conftest.py seeds each test session's cache with them) are the ones the
code builds now for the integration tests' configs: a change to a toy knob, a setting's toy answers, a question bank
or the toy format gives another key, and this test names the command that builds the new one."""

import json

import pytest
from conftest import SEEDED_TOYS

from orchestrator.config import compose_config, settings_for_toy
from workers.models.toy import toy_build_key

# the configs whose toys the integration tests sweep: the default setting, animal_flag (test_real_model's setting,
# the ninth setting's toy) and the capability probe (test_capability_integration)
CONFIGS = [[], ["setting=animal_flag"], ["capability=toy"]]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: " ".join(o) or "default")
def test_each_seeded_toy_is_the_one_the_code_builds_now(overrides):
    cfg = compose_config(overrides)
    key, toy_cfg, _ = toy_build_key(cfg.model.toy, settings_for_toy(cfg))
    folder = SEEDED_TOYS / key
    command = f"LRSWEEP_CACHE=/tmp/toys python -m orchestrator toy {' '.join(overrides)}"
    assert (folder / "build_info.json").exists(), (
        f"tests/data/toys holds no toy with key {key} for {overrides or 'the default config'}: build it with "
        f"`{command}`, copy /tmp/toys/toy/{key} into tests/data/toys/ and delete the toy it replaces")
    info = json.loads((folder / "build_info.json").read_text())

    def knobs(config):  # the key leaves out the settings' names (a ninth setting on animal_flag's toy built it)
        return {k: v for k, v in config.items() if k != "settings"}

    assert info["key"] == key and knobs(info["config"]) == knobs(toy_cfg)
    assert (folder / "model.safetensors").stat().st_size > 1_000_000 and (folder / "tokenizer.json").exists()


def test_no_seeded_toy_is_left_over():
    keys = {toy_build_key(cfg.model.toy, settings_for_toy(cfg))[0] for cfg in map(compose_config, CONFIGS)}
    assert sorted(p.name for p in SEEDED_TOYS.iterdir()) == sorted(keys)
