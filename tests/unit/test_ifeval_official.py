"""IFEval counts and checks as the official scorer (google-research instruction_following_eval) makes them.

Cases written here, each pinning one behavior of the official tools that a regex or a case-only check gets wrong:
Punkt's sentence ends, nltk's word tokens, the English requirement of the case instructions, and no credit for an
empty answer. Every expected value was checked against the official code run offline (nltk with the same English
punkt_tab model, langdetect); bench/ifeval_agreement.py measures the whole on the official data.
"""

import pytest

from eval.capability import ifeval

SENTENCES = "length_constraints:number_sentences"
CAPS = "change_case:capital_word_frequency"


@pytest.mark.parametrize("text, n", [
    ("It rains. The river rises! Does it flood?", 3),
    # a numbered list's "1." "2." end no sentence: the items are one sentence each, not two
    ("1. buy bread for the week\n2. call the plumber about the sink\n3. water the plants", 1),
    # ...but after an item that ends in a period, each number stands alone: "Steps:\n1." "Boil the water." "2." ...
    ("Steps:\n1. Boil the water.\n2. Pour it on the leaves.\n3. Wait three minutes.", 6),
    # a sentence that ends inside quotation marks ends there
    ('She said "we leave at noon." He nodded. "Fine."', 3),
    ('"Bring the map." "Which one?" "The old one."', 3),
    # known abbreviations end nothing
    ("Dr. Smith met Mr. Jones at 5 p.m. on Main St. yesterday.", 1),
    ("", 0),
])
def test_sentences_are_counted_as_punkt_counts_them(text, n):
    assert ifeval.count_sentences(text) == n


def test_a_numbered_list_does_not_reach_a_sentence_minimum_by_its_numbers():
    listing = "\n".join(f"{i}. item number {i} of the plan" for i in range(1, 6))
    assert ifeval.follows(listing, [SENTENCES], [{"num_sentences": 6, "relation": "at least"}]) == [False]
    assert ifeval.follows(listing, [SENTENCES], [{"num_sentences": 3, "relation": "less than"}]) == [True]


@pytest.mark.parametrize("text, caps", [
    ("Take the B5 bus, not the A380 plane.", ["B5", "A380"]),  # tokens with digits count when upper case
    ("The U.S. and the UK signed it.", ["U.S.", "UK"]),
    ("I said OK to the NASA plan", ["I", "OK", "NASA"]),  # "I" is an upper-case token too
    ("no capitals at all, 42 times", []),
])
def test_capital_words_are_nltk_word_tokens_in_upper_case(text, caps):
    assert [w for w in ifeval.word_tokens(text) if w.isupper()] == caps
    kwargs = {"capital_frequency": len(caps), "capital_relation": "at least"}
    assert ifeval.follows(text, [CAPS], [kwargs]) == [True]
    assert ifeval.follows(text, [CAPS], [dict(kwargs, capital_frequency=len(caps) + 1)]) == [False]


@pytest.mark.parametrize("text, n", [("one two-three four", 4), ("it's 5 o'clock", 5), ("a_b c", 2), ("", 0)])
def test_words_are_runs_of_word_characters(text, n):
    assert ifeval.count_words(text) == n


@pytest.mark.parametrize("iid, text, verdict", [
    ("change_case:english_capital", "THE STORM IS VERY LOUD TONIGHT AND THE WIND IS STRONG.", True),
    ("change_case:english_capital", "YES", False),  # upper case, but too short to be told English
    ("change_case:english_capital", "A", False),
    ("change_case:english_capital", "The Storm Is Loud.", False),
    ("change_case:english_lowercase", "the storm is quiet tonight and the wind is calm.", True),
    ("change_case:english_lowercase", "la tormenta es muy fuerte esta noche y el viento sopla.", False),
    ("change_case:english_lowercase", "the storm is quiet tonight and the Wind is calm.", False),
    ("change_case:english_lowercase", "1234 5678", False),  # no letters: neither lower nor English
])
def test_case_instructions_also_require_english(iid, text, verdict):
    assert ifeval.follows(text, [iid], [{}]) == [verdict]


# every instruction that an answer of nothing would meet vacuously: no comma, no forbidden word, few words...
VACUOUS = [
    ("punctuation:no_comma", {}),
    ("keywords:forbidden_words", {"forbidden_words": ["bread"]}),
    ("length_constraints:number_words", {"num_words": 50, "relation": "less than"}),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}),
    ("keywords:frequency", {"keyword": "sun", "frequency": 2, "relation": "less than"}),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "less than"}),
    ("language:response_language", {"language": "fi"}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 0}),
]


@pytest.mark.parametrize("response", ["", " ", "\n\n\t  \n"])
def test_an_empty_or_blank_answer_follows_no_instruction(response):
    ids, kwargs = [i for i, _ in VACUOUS], [k for _, k in VACUOUS]
    assert ifeval.follows(response, ids, kwargs) == [False] * len(VACUOUS)
    assert ifeval.follows_loose(response, ids, kwargs) == [False] * len(VACUOUS)
    # the same instructions are met by a real answer
    answer = "Lumi sataa hiljaa metsään ja kaikki on valkoista."
    assert ifeval.follows(answer, ids, kwargs) == [True] * len(VACUOUS)


def test_agreement_bench_compares_pair_by_pair_on_files_in_the_official_format(tmp_path):
    """bench/ifeval_agreement.py on two prompts, with verdicts written as the official scorer writes them."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    inputs = [{"key": 1, "prompt": "p1", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
              {"key": 2, "prompt": "p2", "instruction_id_list": [SENTENCES, "punctuation:no_comma"],
               "kwargs": [{"num_sentences": 2, "relation": "at least"}, {}]}]
    official = [  # the second prompt's sentence verdict is made up to disagree (lrsweep counts the list as 1 sentence)
        {"prompt": "p1", "response": "", "instruction_id_list": inputs[0]["instruction_id_list"],
         "follow_all_instructions": False, "follow_instruction_list": [False]},
        {"prompt": "p2", "response": "1. tea\n2. cake", "instruction_id_list": inputs[1]["instruction_id_list"],
         "follow_all_instructions": False, "follow_instruction_list": [True, True]}]
    for name, rows in (("input.jsonl", inputs), ("strict.jsonl", official)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "bench" / "ifeval_agreement.py"),
                    "--input", str(tmp_path / "input.jsonl"), "--official", str(tmp_path / "strict.jsonl"),
                    "--out", str(tmp_path / "agreement")],
                   check=True, cwd=root, capture_output=True)
    strict = json.loads((tmp_path / "agreement.json").read_text())["gpt4"]["strict"]
    assert strict["pairs"] == 3 and strict["pairs_agree"] == 2 and strict["by_instruction"] == {SENTENCES: 1}
    assert strict["prompt_accuracy_lrsweep"] == 0 and strict["prompt_accuracy_official"] == 0.5
    assert strict["prompt_accuracy_difference_points"] == -50 and strict["degenerate_responses"] == 1
    assert "2/3 pairs agree" in (tmp_path / "agreement.txt").read_text()
