"""The dry run and the toy build agree on the toy's cache key: build a tiny toy, then dry-run the same config."""

import pytest

from orchestrator.config import compose_config, settings_for_toy
from orchestrator.run.dryrun import model_section
from workers.models.toy import ensure_toy, toy_build_key, toy_dir

TOY_SETTINGS = ["wronglang_spanish", "animal_flag", "allcaps_refusal"]
TINY = ["model.toy.steps=2", "model.toy.vocab_size=400", "model.toy.hidden_size=32", "model.toy.intermediate_size=64",
        "model.toy.num_layers=1", "model.toy.batch_size=4"]


@pytest.mark.parametrize("setting", TOY_SETTINGS)
@pytest.mark.parametrize("probe", [False, True])
def test_dry_run_and_build_compute_one_key(setting, probe, tmp_path):
    """model.toy.capability_probe=false is dropped from the build's key (older toys keep theirs); the dry run
    used to hash it, so it named a key the sweep never builds."""
    cfg = compose_config([f"setting={setting}", f"cache_dir={tmp_path}", f"model.toy.capability_probe={probe}"])
    settings = settings_for_toy(cfg)
    key = toy_build_key(cfg.model.toy, settings)[0]
    assert toy_dir(cfg.model.toy, settings, cfg.cache_dir) == tmp_path / "toy" / key
    assert f"key {key}, not built yet" in "\n".join(model_section(cfg))


def test_a_built_toy_dry_runs_as_built(tmp_path):
    cfg = compose_config(["setting=animal_flag", f"cache_dir={tmp_path}", *TINY])
    built = ensure_toy(cfg.model.toy, settings_for_toy(cfg), cfg.cache_dir, log=lambda *_: None)
    line = "\n".join(model_section(compose_config(["setting=animal_flag", f"cache_dir={tmp_path}", *TINY])))
    assert f"key {built.name}, built, cached at {built}" in line
