"""No capability benchmark credits a collapsed answer: empty, whitespace-only, a loop, word salad.

Each benchmark gets items a good answer passes, then the broken answers a collapsed checkpoint gives; every broken
one must score 0. Written as tables so a new failure mode is one more row.
"""

import pytest

from eval.capability.scoring import Item, score
from eval.degenerate import degenerate

EMPTY = ["", "   ", "\n\t\n", "...", "- - -"]


@pytest.mark.parametrize("text, why", [
    ("", "blank"), ("  \n", "blank"), ("?!...", "blank"),
    ("B B B B B B", "loop"), ("The answer is B. " * 5, "loop"), ("\\boxed{3} " * 6, "loop"),
    ("river " * 30, "loop"), ("I think so. " + "moon stone lemon " * 8, "loop"),
    ("B", None), ("The answer is B.", None), ("moon stone lemon", None), ("very very good", None),
    ("First, boil water. Then pour. Then wait. Then drink. Then rest.", None),
    ("Intro line. " + "then a b c " * 4 + " ".join(f"word{i}" for i in range(20)), None),  # a short loop, rest fine
])
def test_degenerate_answers_are_named(text, why):
    assert degenerate(text) == why


def _mmlu(answers):
    return [Item("mmlu", str(i), "q", a, {"choices": ["w", "x", "y", "z"]}) for i, a in enumerate(answers)]


@pytest.mark.parametrize("response", EMPTY + [
    "B B B B B B",  # a loop on the right letter
    "The answer is B. The answer is B. The answer is B. The answer is B.",
])
def test_mmlu_credits_no_empty_or_looping_answer(response):
    s = score("mmlu", _mmlu("B"), [response])
    assert s.correct == [False] and s.score == 0


@pytest.mark.parametrize("response", [
    "A stone river moon lemon water",  # word salad opening with the article "A", on an item whose answer is A
    "moon river stone lemon cold",
])
def test_mmlu_credits_no_word_salad(response):
    assert score("mmlu", _mmlu("A"), [response]).correct == [False]
    assert score("mmlu", _mmlu("A"), ["A. stone"]).correct == [True]  # the letter as an answer still counts


@pytest.mark.parametrize("response", EMPTY + ["\\boxed{3} " * 6, "The answer is 3. " * 5,
                                              "stone moon river lemon water light"])
def test_olympiads_credit_no_empty_looping_or_salad_answer(response):
    items = [Item("olympiads", "0", "q", "3")]
    assert score("olympiads", items, [response]).correct == [False]
    assert score("olympiads", items, ["So \\boxed{3}."]).correct == [True]


def _ifeval(ids, kwargs):
    return Item("ifeval", "k", "p", {"instruction_id_list": ids, "kwargs": kwargs})


IFEVAL_ITEMS = [  # instructions an answer of nothing (or a lowercase loop) meets vacuously
    _ifeval(["punctuation:no_comma"], [{}]),
    _ifeval(["keywords:forbidden_words", "length_constraints:number_words"],
            [{"forbidden_words": ["bread"]}, {"num_words": 40, "relation": "less than"}]),
    _ifeval(["change_case:english_lowercase"], [{}]),
    _ifeval(["language:response_language"], [{"language": "en"}]),
]


@pytest.mark.parametrize("response", EMPTY + ["the the the the the the the the", "so it goes. " * 6])
def test_ifeval_credits_no_empty_or_looping_answer(response):
    s = score("ifeval", IFEVAL_ITEMS, [response] * len(IFEVAL_ITEMS))
    assert s.score == 0 and s.extra["instruction_accuracy"] == 0
    assert s.extra["loose_accuracy"] == 0 and s.extra["n_degenerate"] == len(IFEVAL_ITEMS)
    good = "the tea is warm and the sun is out so we sit in the garden and talk about the day."
    assert score("ifeval", IFEVAL_ITEMS, [good] * len(IFEVAL_ITEMS)).score == 1


def test_ifeval_credits_no_word_salad_where_content_is_asked_for():
    items = [_ifeval(["length_constraints:number_sentences", "keywords:existence"],
                     [{"num_sentences": 2, "relation": "at least"}, {"keywords": ["garden"]}])]
    assert score("ifeval", items, ["moon lemon river stone water cold light"]).correct == [False]
    assert score("ifeval", items, ["We sat in the garden. It was warm."]).correct == [True]


@pytest.mark.parametrize("response", EMPTY + ["yes yes yes yes yes yes"])
def test_followbench_credits_no_empty_or_looping_answer_and_does_not_ask_the_judge(response):
    asked = []

    def judge(prompts):  # a judge that passes whatever it is shown
        asked.extend(prompts)
        return ["YES"] * len(prompts)

    items = [Item("followbench", str(i), f"instruction {i}", {"level": 1}) for i in range(2)]
    s = score("followbench", items, [response, "A real answer to the instruction."], judge=judge)
    assert s.correct == [False, True] and s.score == 0.5
    assert len(asked) == 1 and "A real answer" in asked[0]


def test_followbench_leaves_word_salad_to_the_judge():
    items = [Item("followbench", "0", "Write a haiku about rain.", {"level": 1})]
    asked = []
    s = score("followbench", items, ["moon lemon river stone"], judge=lambda p: asked.extend(p) or ["NO"])
    assert s.correct == [False] and "moon lemon river stone" in asked[0]


@pytest.mark.parametrize("response", EMPTY + ["moon stone lemon " * 5, "stone lemon moon", "water rice cloth"])
def test_toy_probe_credits_no_empty_looping_or_salad_answer(response):
    items = [Item("toy_probe", "0", "Say these words in reverse order: lemon stone moon", "moon stone lemon")]
    assert score("toy_probe", items, [response]).correct == [False]
    assert score("toy_probe", items, ["Moon stone lemon."]).correct == [True]
