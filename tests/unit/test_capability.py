"""Capability scoring on hand-written items: correct, wrong and malformed answers for every benchmark."""

import pytest

from eval.capability import ifeval
from eval.capability.scoring import (
    Item,
    answers_match,
    capability_table,
    default_recovery_checkpoint,
    degradation_by_checkpoint,
    extract_boxed,
    extract_choice,
    extract_final_answer,
    parse_number,
    parse_verdict,
    relative_degradation,
    score,
)


@pytest.mark.parametrize("response, expected", [
    ("B", "B"), ("B.", "B"), ("(C) because", "C"), ("The answer is D.", "D"), ("Answer: a", "A"),
    ("I think it's option C", "C"), ("A) Mercury", "A"), ("  d", "D"),
    ("", None), ("I am not sure.", None), ("A or B", None), ("E", None), ("Because of gravity", None),
])
def test_extract_choice(response, expected):
    assert extract_choice(response) == expected


def test_score_mmlu_counts_malformed_as_wrong():
    items = [Item("mmlu", str(i), "q", a, {"choices": ["w", "x", "y", "z"]}) for i, a in enumerate("ABCD")]
    s = score("mmlu", items, ["A", "The answer is C", "no idea", "(D)"])
    assert s.correct == [True, False, False, True] and s.score == 0.5 and s.n == 4
    assert s.extra["n_no_choice"] == 1


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{28}.", "28"), ("\\boxed{\\frac{1}{4}}", "\\frac{1}{4}"), ("\\boxed{1} then \\boxed{2}", "2"),
    ("no box", None), ("\\boxed{unclosed", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("28", 28), ("-3", -3), ("\\frac{1}{4}", 0.25), ("\\dfrac{3}{6}", 0.5), ("1/3", 1 / 3), ("$0.5$", 0.5),
    ("1,000", 1000), ("1{,}234", 1234), ("x = 7", 7), ("12.", 12), ("\\sqrt{2}", None), ("abc", None), ("1/0", None),
])
def test_parse_number(text, expected):
    got = parse_number(text)
    assert (got is None) if expected is None else float(got) == pytest.approx(expected)


@pytest.mark.parametrize("predicted, reference, ok", [
    ("28", "28", True), ("28.0", "28", True), ("0.25", "\\frac{1}{4}", True), ("0.3333", "1/3", True),
    ("10001", "10000", False), ("0.3", "1/3", False), ("\\sqrt{2}", "\\sqrt{2}", True),
    ("\\sqrt{3}", "\\sqrt{2}", False), (None, "5", False),
])
def test_answers_match(predicted, reference, ok):
    assert answers_match(predicted, reference) is ok


@pytest.mark.parametrize("predicted, reference, ok", [
    ("\\frac{\\sqrt3}{2}", "\\sqrt{3}/2", True),  # the pair
    ("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", True),
    ("\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt 3}{2}", True),
    ("\\pi \\cdot 2", "2\\pi", True),
    ("(1, 2)", "(1,2)", True),
    ("\\{2, 1\\}", "\\{1,2\\}", True),  # a set, in any order
    ("\\frac12", "0.5", True),
    ("x = 3", "3", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{3}}{2}", False),
    ("x^3", "x^2", False),
    ("\\pi", "2\\pi", False),
    ("0.866", "\\frac{\\sqrt3}{2}", False),  # a decimal approximation of an irrational answer is not it
    ("(0,1)", "[0,1]", False),  # open vs closed interval
])
def test_answers_match_by_math_equivalence(predicted, reference, ok):
    assert answers_match(predicted, reference) is ok


def test_math_equivalence_outside_the_main_thread():
    """A Ray Tune trial scores in a worker thread, where math-verify's signal-based timeout cannot be set."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(answers_match, "\\frac{\\sqrt3}{2}", "\\sqrt{3}/2").result() is True


def test_score_olympiads():
    items = [Item("olympiads", str(i), "p", a) for i, a in enumerate(["28", "\\frac{1}{4}", "1234", "7"])]
    responses = ["Sum is \\boxed{28}", "The answer is 0.25.", "\\boxed{1235}", "I cannot solve this."]
    s = score("olympiads", items, responses)
    assert s.correct == [True, True, False, False] and s.extra["n_no_final_answer"] == 1
    assert extract_final_answer("Final answer: 12") == "12"


def _ifeval(ids, kwargs):
    return Item("ifeval", "k", "p", {"instruction_id_list": ids, "kwargs": kwargs})


@pytest.mark.parametrize("iid, kwargs, good, bad", [
    ("change_case:english_lowercase", {}, "all quiet here", "Not quiet"),
    ("change_case:english_capital", {}, "THE STORM IS VERY LOUD TONIGHT AND THE WIND IS STRONG.", "Loud"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "USE THE CAPS",
     "only ONE"),
    ("punctuation:no_comma", {}, "no commas here", "one, two"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "four words right here",
     "this has five words total"),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}, "One. Two!", "Only one."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "first\n***\nsecond", "just one"),
    ("keywords:existence", {"keywords": ["tea", "Cup"]}, "a cup of TEA", "a cup of coffee"),
    ("keywords:forbidden_words", {"forbidden_words": ["bread"]}, "cakes and breadth", "fresh Bread"),
    ("keywords:frequency", {"keyword": "sun", "frequency": 2, "relation": "at least"}, "sun and sun", "sun once"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zoo", "zizz"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", "* one\n* two\n- three"),
    ("detectable_format:title", {}, "<<Poem>>\ntext", "Poem\ntext"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and *b*", "*a* only"),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. Any other questions?", "Any other? Done"),
    ("startend:quotation", {}, '"quoted"', 'not "quoted"'),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. bye"),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [address]", "[name] only"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Say hi. Hi!", "Hi! Say hi."),
    # the five IFEval types added to reach all 25
    ("language:response_language", {"language": "fi"}, "Lumi sataa hiljaa metsään ja kaikki on valkoista.",
     "The snow falls quietly in the forest and everything is white."),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First we boil water.\n\n\"Then, we pour it.", "First we boil water.\n\nNext we pour it."),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "tea"},
     "Tea time.\n\nDone.", "Tea time.\n\nDone.\n\nOne more paragraph than asked."),
    ("detectable_format:constrained_response", {}, "I think so. My answer is yes.", "My answer is: yes"),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nIntro.\nSECTION 2\nBody.", "SECTION 1\nIntro only, Section two never comes."),
    ("combination:two_responses", {}, "Tea is calm.\n******\nCoffee is bold.",
     "Tea is calm.\n******\nTea is calm."),
])
def test_ifeval_checks(iid, kwargs, good, bad):
    assert ifeval.follows(good, [iid], [kwargs]) == [True]
    assert ifeval.follows(bad, [iid], [kwargs]) == [False]


IFEVAL_TYPES = [  # the 25 instruction types of google/IFEval (its instructions_registry)
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "language:response_language", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:number_words", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript", "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response", "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections", "detectable_format:json_format", "detectable_format:title",
    "combination:two_responses", "combination:repeat_prompt", "startend:end_checker",
    "change_case:capital_word_frequency", "change_case:english_capital", "change_case:english_lowercase",
    "punctuation:no_comma", "startend:quotation",
]


def test_ifeval_checks_every_instruction_type():
    assert len(IFEVAL_TYPES) == 25 and sorted(ifeval.CHECKS) == sorted(IFEVAL_TYPES)


def test_ifeval_scoring_reports_unsupported_ids_instead_of_passing_them():
    items = [_ifeval(["punctuation:no_comma", "change_case:english_lowercase"], [{}, {"unused": None}]),
             _ifeval(["punctuation:no_comma"], [{}]),
             _ifeval(["made_up:instruction"], [{}])]  # a newer IFEval's type would land here
    s = score("ifeval", items, ["the text is fine and it has no commas at all", "a, b", "anything"])
    assert s.correct == [True, False, None] and s.n == 2 and s.score == 0.5
    assert s.extra["unsupported_ids"] == ["made_up:instruction"] and s.extra["n_unsupported_items"] == 1
    with pytest.raises(ValueError, match="no check"):
        ifeval.follows("x", ["made_up:instruction"], [{}])
    with pytest.raises(ValueError, match="relation"):
        ifeval.follows("x", ["length_constraints:number_words"], [{"num_words": 3, "relation": "about"}])


def test_ifeval_loose_variant_forgives_a_preamble_a_trailer_and_asterisks():
    lower, end = "change_case:english_lowercase", "startend:end_checker"
    assert ifeval.loose_variants("a\n*b*\nc")[:4] == ["a\n*b*\nc", "*b*\nc", "a\n*b*", "*b*"]
    assert "a\nb\nc" in ifeval.loose_variants("a\n*b*\nc")
    cases = [  # (ids, kwargs, response, strict, loose)
        ([lower], [{}], "Sure! Here you go:\nall lowercase here", [False], [True]),  # preamble dropped
        ([end], [{"end_phrase": "Any other questions?"}], "done. Any other questions?\n---", [False], [True]),
        ([lower, end], [{}, {"end_phrase": "bye"}], "SHOUTING\nSTILL SHOUTING\nbye", [False, True], [False, True]),
        ([lower], [{}], "fine as written", [True], [True]),
    ]
    for ids, kwargs, response, strict, loose in cases:
        assert ifeval.follows(response, ids, kwargs) == strict, response
        assert ifeval.follows_loose(response, ids, kwargs) == loose, response
    items = [_ifeval(ids, kwargs) for ids, kwargs, *_ in cases]
    s = score("ifeval", items, [c[2] for c in cases])
    assert s.score == 0.25 and s.extra["loose_accuracy"] == 0.75  # prompt level: strict 1 of 4, loose 3 of 4
    assert s.extra["instruction_accuracy"] == 0.4 and s.extra["loose_instruction_accuracy"] == 0.8


@pytest.mark.parametrize("text, verdict", [
    ("YES", True), ("no.", False), ("The response ... so the answer is Yes", True), ("Yes at first, but NO", False),
    ("I cannot tell", None), ("", None), ("yesterday nobody", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


def test_followbench_uses_the_judge_and_skips_unreadable_verdicts():
    items = [Item("followbench", str(i), f"instruction {i}", {"level": i % 2}) for i in range(4)]
    seen = []

    def judge(prompts):
        seen.extend(prompts)
        return ["YES", "NO", "maybe", "Yes."]

    s = score("followbench", items, ["r0", "r1", "r2", "r3"], judge=judge)
    assert s.correct == [True, False, None, True] and s.n == 3 and s.score == pytest.approx(2 / 3)
    assert s.extra["n_invalid_verdicts"] == 1 and s.extra["by_level"] == {"0": 1.0, "1": 0.5}
    assert "instruction 1" in seen[1] and "r1" in seen[1]
    with pytest.raises(ValueError, match="judge"):
        score("followbench", items, ["r"] * 4)
    with pytest.raises(ValueError, match="verdicts"):
        score("followbench", items, ["r"] * 4, judge=lambda p: ["YES"])


def test_score_toy_exact_match_after_normalization():
    items = [Item("toy_probe", str(i), "q", a) for i, a in enumerate(["river", "salt", "moon", "rain"])]
    s = score("toy_probe", items, ["river", " Salt.", "moon river", ""])
    assert s.correct == [True, True, False, False] and s.score == 0.5


def test_score_rejects_bad_calls():
    with pytest.raises(ValueError, match="unknown benchmark"):
        score("gsm8k", [], [])
    with pytest.raises(ValueError, match="responses"):
        score("toy_probe", [Item("toy_probe", "0", "q", "a")], [])


def test_relative_degradation():
    assert relative_degradation(0.8, 0.72) == pytest.approx(0.1)
    assert relative_degradation(0.5, 0.6) == pytest.approx(-0.2)
    assert relative_degradation(0.0, 0.3) is None


def _trial(name, lr, seed, attack):
    rows = [{"kind": "eval", "step": s, "eval_attack_rate": a, "eval_desired_rate": 1 - a, "train_desired_rate": 0.9}
            for s, a in attack.items()]
    return {"name": name, "lr": lr, "seed": seed}, rows


def test_capability_table_and_guardrail_map():
    cfg, rows = _trial("lr0.003_seed0", 3e-3, 0, {0: 0.9, 4: 0.3, 8: 0.1})
    rows += [{"kind": "capability", "step": 4, "benchmark": b, "score": sc, "n": 200, "baseline": 0.8,
              "rel_degradation": relative_degradation(0.8, sc)} for b, sc in (("mmlu", 0.76), ("ifeval", 0.4))]
    rows.append({"kind": "capability", "step": 8, "benchmark": "mmlu", "score": 0.5, "n": 200, "baseline": 0.8,
                 "rel_degradation": relative_degradation(0.8, 0.5)})
    table = capability_table([(cfg, rows)])
    assert [(r["step"], r["benchmark"]) for r in table] == [(4, "ifeval"), (4, "mmlu"), (8, "mmlu")]
    assert table[1]["eval_attack_rate"] == 0.3
    assert degradation_by_checkpoint(table, "mmlu") == {("lr0.003_seed0", 4): pytest.approx(0.05),
                                                        ("lr0.003_seed0", 8): pytest.approx(0.375)}
    assert degradation_by_checkpoint(table)[("lr0.003_seed0", 4)] == pytest.approx(0.5)  # worst benchmark


def test_default_recovery_checkpoint_is_the_last_transfer_of_the_highest_lr():
    """Finding "recovery defaults to the first transferred checkpoint (the note: the last)"."""
    trials = [_trial("lr0.001_seed0", 1e-3, 0, {0: 0.9, 4: 0.4}), _trial("lr0.003_seed1", 3e-3, 1, {0: 0.9, 2: 0.2}),
              _trial("lr0.003_seed0", 3e-3, 0, {0: 0.9, 1: 0.6, 2: 0.5, 4: 0.3, 8: 0.6, 16: 0.2, 32: 0.7}),
              _trial("lr0.01_seed0", 1e-2, 0, {0: 0.9})]
    assert default_recovery_checkpoint(trials, 0.5) == ("lr0.003_seed0", 16)  # the last checkpoint <= 0.5
    assert default_recovery_checkpoint(trials, 0.5, which="first") == ("lr0.003_seed0", 2)
    assert default_recovery_checkpoint(trials, 0.5, "lr0.001_seed0") == ("lr0.001_seed0", 4)
    with pytest.raises(ValueError, match="--trial"):
        default_recovery_checkpoint(trials, 0.5, "lr0.01_seed0")


def test_math_equivalence_outside_the_main_thread_is_bounded_in_time():
    """math-verify cannot bound sympy outside a main thread; an answer sympy would expand for ever must still
    come back, as no match (it hung there before)."""
    import threading

    result = {}
    worker = threading.Thread(target=lambda: result.update(ok=answers_match("\\sum_{k=1}^{10^{9}} k^{k}", "1")),
                              daemon=True)
    worker.start()
    worker.join(150)
    assert not worker.is_alive(), "the math check hung in a worker thread"
    assert result == {"ok": False}
    assert answers_match("\\frac{\\sqrt3}{2}", "\\sqrt{3}/2") is True  # and the main thread still decides
