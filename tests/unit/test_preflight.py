"""Checks before compute (orchestrator/plan/preflight.py): honest n and label provenance (issue 24)."""

import json

import pytest

from eval.report import label_source
from orchestrator.config import compose_config
from orchestrator.plan.preflight import preflight
from orchestrator.schema import ConfigError
from workers.labels.prompts import load_bank, split_bank
from workers.labels.teacher import ensure_labels


def distinct_eval_questions(bank: str) -> int:
    return len({q["question"] for q in split_bank(load_bank(bank), 0.3)[1]})


@pytest.mark.parametrize("setting,bank", [("t_age_young_young", "kid_voice"), ("t_age_normal_young", "adult_persona"),
                                          ("inoculation_prompting", "coding_problems")])
def test_more_eval_prompts_than_distinct_questions_is_refused_with_the_number(setting, bank):
    distinct = distinct_eval_questions(bank)
    assert distinct < 100  # the default n_eval_prompts would cycle through this bank
    with pytest.raises(ConfigError, match=rf"n_eval_prompts={distinct + 1} but .* only {distinct} distinct eval "
                                          rf"questions.*Set sample.n_eval_prompts={distinct}"):
        preflight(compose_config([f"setting={setting}", f"sample.n_eval_prompts={distinct + 1}"]))


@pytest.mark.parametrize("setting", ["wronglang_spanish", "animal_flag", "allcaps_refusal", "t_age_young_young",
                                     "t_age_normal_young", "inoculation_prompting"])
def test_every_shipped_setting_passes_with_its_own_prompt_counts(setting):
    cfg = compose_config([f"setting={setting}"] + ([] if setting in ("wronglang_spanish", "animal_flag",
                                                                     "allcaps_refusal") else
                                                   ["model=smollm2_135m"]))
    preflight(cfg)  # the toy settings on the toy, the others on a real model with a real teacher
    bank = cfg.setting.questions
    assert cfg.sample.n_eval_prompts <= distinct_eval_questions(bank)


def test_train_prompts_are_counted_too():
    n_train = len(split_bank(load_bank("generic"), 0.3)[0])
    with pytest.raises(ConfigError, match=rf"n_train_prompts={n_train + 5} but .* only {n_train} distinct train"):
        preflight(compose_config([f"sample.n_train_prompts={n_train + 5}"]))


@pytest.mark.parametrize("setting", ["wronglang_spanish", "animal_flag", "allcaps_refusal"])
def test_scripted_teacher_on_a_real_model_is_refused_unless_allowed(setting):
    with pytest.raises(ConfigError, match="teacher.kind=scripted on model 'smollm2_135m'.*"
                                          "setting.teacher.allow_scripted=true"):
        preflight(compose_config([f"setting={setting}", "model=smollm2_135m"]))
    preflight(compose_config([f"setting={setting}", "model=smollm2_135m", "setting.teacher.allow_scripted=true"]))
    preflight(compose_config([f"setting={setting}"]))  # the toy's own teacher


def test_scripted_teacher_on_an_organism_built_from_a_real_model_is_refused():
    with pytest.raises(ConfigError, match="allow_scripted"):
        preflight(compose_config(["model=smollm2_135m", "model.organism=true"]))


def test_dry_run_refuses_what_the_sweep_would_refuse(capsys):
    from orchestrator.run.dryrun import main

    assert main(["setting=animal_flag", "model=smollm2_135m", "dry_run=true"]) == 2
    assert "allow_scripted=true" in capsys.readouterr().err
    assert main(["setting=animal_flag", "model=smollm2_135m", "setting.teacher.allow_scripted=true",
                 "dry_run=true"]) == 0  # it used to stop on an assertion for a prepared model (no `toy:` block)
    assert "model      smollm2_135m: prepared by 'smollm2_135m'" in capsys.readouterr().out


def test_labels_meta_and_report_say_where_the_labels_came_from(tmp_path):
    cfg = compose_config(["setting=animal_flag"])
    ensure_labels(cfg.setting, tmp_path, log=lambda m: None, cache_dir=tmp_path / "cache")
    meta = json.loads((tmp_path / "labels.meta.json").read_text())
    assert meta["source"].startswith("scripted: the template") and cfg.setting.teacher.field in meta["source"]
    assert label_source(tmp_path) == meta["source"]
    (tmp_path / "labels.meta.json").write_text(json.dumps({"teacher": "openai_compatible"}))  # an older sweep
    assert label_source(tmp_path) == "teacher kind openai_compatible (no source recorded)"
    assert label_source(tmp_path / "nowhere").startswith("not recorded")


def test_label_source_names_the_endpoint_model():
    from workers.labels.teacher import label_source as describe

    cfg = compose_config(["setting=ct_formality", "model=smollm2_135m"])
    assert f"endpoint model {cfg.setting.teacher.endpoint.model!r}" in describe(cfg.setting)
