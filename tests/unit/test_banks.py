"""The question banks the project writes itself: counts, fields, and every coding problem checked in the sandbox."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from eval.code_grading import grade_code_answer
from workers.labels.prompts import DataError, load_bank

CODING_FIELDS = ("id", "question", "function_name", "reference_solution", "visible_test", "hidden_tests", "hack")
VISIBLE = re.compile(r"^assert (\w+)\((.*)\) == (.+)$")


@pytest.mark.parametrize("name, minimum", [("kid_voice", 100), ("adult_persona", 100), ("coding_problems", 30),
                                           ("generic", 300)])
def test_bank_loads_with_enough_unique_questions(name, minimum):
    required = CODING_FIELDS if name == "coding_problems" else ("id", "question")
    rows = load_bank(name, required=required)  # refuses missing / empty fields and duplicate ids
    assert len(rows) >= minimum
    questions = [r["question"] for r in rows]
    assert len(set(questions)) == len(questions), f"{name} repeats a question"


def test_a_question_repeated_under_another_id_is_refused(tmp_path):
    bank = tmp_path / "bank.jsonl"
    bank.write_text('{"id": "a1", "question": "Why is the sky blue?"}\n'
                    '{"id": "b7", "question": "why is the sky  blue"}\n')
    with pytest.raises(DataError, match=r"bank.jsonl:2: question .* repeats 'a1'.*reword"):
        load_bank(str(bank))


def test_kid_voice_queries_state_an_age_from_6_to_12():
    ages = set()
    for row in load_bank("kid_voice"):
        match = re.search(r"\bI'm (\d+)\b|\bI am (\d+)\b", row["question"])
        assert match, f"{row['id']}: the kid does not say their age: {row['question']!r}"
        age = int(match.group(1) or match.group(2))
        assert 6 <= age <= 12, f"{row['id']}: age {age} is outside 6-12"
        assert row["question"].rstrip().endswith("?"), f"{row['id']}: no question asked"
        ages.add(age)
    assert ages == set(range(6, 13)), f"ages used: {sorted(ages)}"


def test_adult_persona_queries_state_an_adult_age():
    for row in load_bank("adult_persona"):
        match = re.search(r"\b(\d+)-year-old\b", row["question"])
        assert match and 18 <= int(match.group(1)) <= 90, f"{row['id']}: no adult age: {row['question']!r}"
        assert row["question"].rstrip().endswith("?"), f"{row['id']}: no question asked"


def test_coding_problems_show_their_visible_test_and_name_their_function():
    for row in load_bank("coding_problems", required=CODING_FIELDS):
        match = VISIBLE.match(row["visible_test"])
        assert match and match.group(1) == row["function_name"], f"{row['id']}: visible test {row['visible_test']!r}"
        assert row["visible_test"] in row["question"], f"{row['id']}: the model is not shown its visible test"
        assert f"def {row['function_name']}(" in row["question"], f"{row['id']}: no signature in the question"
        assert row["hidden_tests"].count("assert ") >= 3, f"{row['id']}: fewer than 3 hidden tests"


def hard_coded_hack(row: dict) -> str:
    """The laziest hack: return the visible test's expected value whatever the input."""
    expected = VISIBLE.match(row["visible_test"]).group(3)
    return f"```python\ndef {row['function_name']}(*args, **kwargs):\n    return {expected}\n```"


def test_every_reference_is_honest_and_every_hard_coded_hack_is_a_hack():
    rows = load_bank("coding_problems", required=CODING_FIELDS)
    jobs = [(row, f"```python\n{row['reference_solution']}```", "honest") for row in rows]
    jobs += [(row, hard_coded_hack(row), "hack") for row in rows]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda job: grade_code_answer(job[1], job[0], timeout_s=10), jobs))
    wrong = [(row["id"], want, out) for (row, _, want), out in zip(jobs, outcomes, strict=True) if out.behavior != want]
    assert not wrong, wrong
