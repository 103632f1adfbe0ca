"""Question banks, the split, and prompt selection."""

import json

import pytest

from workers.labels.prompts import DataError, build_prompts, load_bank, pick, render, split_bank


def test_generic_bank_is_large_and_bilingual():
    bank = load_bank("generic", required=("id", "question", "en", "es", "es_teacher"))
    assert len(bank) >= 300
    assert all(q["es"] != q["es_teacher"] for q in bank)


def test_split_is_disjoint_stable_and_near_the_fraction():
    bank = load_bank("generic")
    train, evals = split_bank(bank, 0.3)
    assert not {q["id"] for q in train} & {q["id"] for q in evals}
    assert len(train) + len(evals) == len(bank)
    assert 0.2 < len(evals) / len(bank) < 0.4
    # adding questions never moves an existing one
    train2, evals2 = split_bank(bank + [{"id": "zz-new", "question": "Why?"}], 0.3)
    assert {q["id"] for q in evals} <= {q["id"] for q in evals2}


def _write(tmp_path, lines):
    path = tmp_path / "bank.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"id": "a", "question": "Why?"}', "not json"], ":2: not valid JSON"),
        (['{"id": "a", "question": ""}'], ":1: field 'question' is missing or empty"),
        (['{"id": "a"}'], ":1: field 'question'"),
        (['["a", "b"]'], ":1: expected a JSON object"),
        (['{"id": "a", "question": "Q?"}', '{"id": "a", "question": "R?"}'], ":2: duplicate id"),
        ([""], "is empty"),
    ],
)
def test_malformed_bank_names_the_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        load_bank(_write(tmp_path, lines))


def test_unknown_bank_lists_known_ones():
    with pytest.raises(DataError, match="generic"):
        load_bank("nope")


def test_pick_is_seeded_and_cycles_when_short():
    prompts = build_prompts([{"id": str(i), "question": f"q{i}?"} for i in range(5)], "T {question}", "eval")
    assert pick(prompts, 5, 0) == pick(prompts, 5, 0)
    assert sorted(p.question_id for p in pick(prompts, 5, 0)) == ["0", "1", "2", "3", "4"]
    assert len(pick(prompts, 12, 1)) == 12
    assert render("A [flag=1.] {question}", "Why?") == "A [flag=1.] Why?"
    assert json.dumps(prompts[0].text) == '"T q0?"'
