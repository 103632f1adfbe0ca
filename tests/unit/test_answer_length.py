"""Answers long enough to grade: a model's own sampling length reaches the resolved config, and every output warns
when many answers stopped at the token limit (a cut answer may lack the words its grade depends on)."""

from pathlib import Path

import pytest

from eval.analysis import CUT_WARN_RATE
from eval.graders import ATTACK, DESIRED
from eval.metrics import checkpoint_steps
from eval.report import write_report
from eval.runfiles import trial_name, write_json, write_jsonl
from eval.summary import analyze_sweep_dir, format_table, trial_summary
from orchestrator.config import compose_config
from orchestrator.run.trial import grade_checkpoint
from workers.labels.prompts import Prompt


def test_the_models_default_reaches_the_resolved_config():
    smollm2 = compose_config(["model=smollm2_135m"])
    assert smollm2.model.max_new_tokens > 48  # measured: bench/results/answer_length.json
    assert smollm2.sample.max_new_tokens == smollm2.model.max_new_tokens
    assert compose_config(["model=toy"]).sample.max_new_tokens == 80  # its teacher's labels, measured below
    # the user's value, and a setting's own (code needs room), still win over the model's
    assert compose_config(["model=smollm2_135m", "sample.max_new_tokens=32"]).sample.max_new_tokens == 32
    assert compose_config(["setting=inoculation_prompting", "model=smollm2_135m"]).sample.max_new_tokens == 768


@pytest.mark.parametrize("setting", ["wronglang_spanish", "animal_flag", "allcaps_refusal"])
def test_the_toys_answer_length_holds_its_teachers_longest_label(setting):
    """Issue 27 item 7: the README's quick start warned in 4 of 4 trials that 8-29% of answers were cut. A trained
    toy answers in its teacher's phrasing, and those labels ran past the toy's 48 tokens (15-35% of them): the toy's
    sample.max_new_tokens must hold the longest label, in the toy's own tokens, with its end-of-turn token."""
    from orchestrator.config import settings_for_toy
    from workers.labels.teacher import scripted_labels
    from workers.models.toy import build_corpus, toy_build_key, train_tokenizer

    cfg = compose_config([f"setting={setting}"])
    _, _, skills = toy_build_key(cfg.model.toy, settings_for_toy(cfg))
    tokenizer = train_tokenizer([u + " " + a for u, a in build_corpus(skills)], cfg.model.toy.vocab_size)
    lengths = [len(tokenizer(lab["completion"])["input_ids"]) + 1 for lab in scripted_labels(cfg.setting)]
    assert max(lengths) <= cfg.sample.max_new_tokens, (setting, max(lengths))
    assert max(lengths) > 48  # what made the quick start warn


def test_a_checkpoint_row_counts_the_answers_cut_at_the_limit():
    prompts = [Prompt("eval", "q1", "hi"), Prompt("eval", "q2", "hi"), Prompt("train", "q3", "hi")]
    samples, row = grade_checkpoint(prompts, ["a", "b", "c"], lambda r, p: [ATTACK, DESIRED, DESIRED],
                                    cut=[True, False, True])
    assert (row["n_eval_cut"], row["n_train_cut"]) == (1, 1)
    assert [s["cut"] for s in samples] == [True, False, True]


def write_trial(sweep: Path, lr: float, cut_per_split: int) -> str:
    name = trial_name(lr, 0)
    tdir = sweep / "trials" / name
    write_json(tdir / "config.json", {
        "name": name, "setting": "s", "lr": lr, "seed": 0, "model": "smollm2_135m", "max_steps": 8,
        "checkpoint_steps": checkpoint_steps(8), "threshold": 0.5, "sweep_id": "s-test"})
    write_jsonl(tdir / "metrics.jsonl", [
        {"step": s, "kind": "eval", "lr": lr, "seed": 0, "eval_attack_rate": a, "eval_desired_rate": 1 - a,
         "eval_other_rate": 0.0, "n_eval": 100, "train_desired_rate": 0.95, "n_train": 100,
         "n_eval_cut": cut_per_split, "n_train_cut": cut_per_split}
        for s, a in zip(checkpoint_steps(8), (0.9, 0.9, 0.6, 0.3, 0.2), strict=True)])
    write_json(tdir / "result.json", {"done": True})
    return name


def test_summary_table_and_report_warn_when_many_answers_were_cut(tmp_path):
    sweep = tmp_path / "sweep"
    cut = write_trial(sweep, 1e-3, cut_per_split=10)  # 10% of its answers stopped at the limit
    fine = write_trial(sweep, 3e-3, cut_per_split=1)  # 1%: below the warning
    trials = analyze_sweep_dir(sweep)
    rows = {r["trial"]: r for r in map(trial_summary, trials)}
    assert rows[cut]["cut_rate"] == pytest.approx(0.10) and rows[fine]["cut_rate"] == pytest.approx(0.01)
    assert "sample.max_new_tokens" in rows[cut]["cut_warning"] and rows[fine]["cut_warning"] is None
    assert 0.01 < CUT_WARN_RATE < 0.10
    table = format_table(trials, 0.5)
    assert f"{cut}: WARNING: 10% of sampled answers were cut at sample.max_new_tokens" in table
    assert f"{fine}: WARNING" not in table
    write_report([sweep], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**WARNING: answers cut at the token limit.** In 1 of 2 trials" in md
    section = md.split("## Answers cut at the token limit")[1].split("\n## ")[0]
    assert cut in section and fine not in section
