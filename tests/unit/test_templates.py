"""Prompt and answer templates: placeholders drawn per question, pure and deterministic."""

import re

import pytest

from workers.labels.prompts import (
    DataError,
    answer_fields,
    answer_template,
    render,
    render_answer,
    style_tag_spec,
    style_tags,
    tag_descriptions,
    template_errors,
    x_high,
    x_low,
)

ROW = {"id": "q1", "question": "How? {x_low} stays as written", "en": "Rinse it.", "en_teacher": "Wash it."}


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{question}", ROW["question"]),
        ("A [flag=1.] {question}", "A [flag=1.] " + ROW["question"]),
        ("{question} Use proper capitalization and punctuation.",
         ROW["question"] + " Use proper capitalization and punctuation."),
        ("x={x_low}. {question}", f"x={x_low('q1')}. " + ROW["question"]),
        ("x={x_high}. {question}", f"x={x_high('q1')}. " + ROW["question"]),
        ("{style_tags} {question}", style_tags("q1") + " " + ROW["question"]),
        ("{x_low} {x_low} {question}", f"{x_low('q1')} {x_low('q1')} " + ROW["question"]),  # one value per prompt
        ("literal {braces in text} {question}", "literal {braces in text} " + ROW["question"]),
    ],
)
def test_render_table(template, expected):
    assert render(template, ROW) == expected


def test_render_takes_bare_question_text():
    assert render("A [flag=1.] {question}", "Why?") == "A [flag=1.] Why?"


def test_render_refuses_an_unknown_placeholder():
    with pytest.raises(DataError, match=r"unknown placeholder \{flag\}"):
        render("{flag} {question}", ROW)


@pytest.mark.parametrize(
    "template, errors",
    [
        ("{question}", []),
        ("x={x_low}. {question}", []),
        ("Tag descriptions: {tag_descriptions} [lang: English] {style_tags} {question}", []),
        ("no placeholder", ["no {question}"]),
        ("{questions}", ["no {question}", "unknown placeholders ['{questions}']"]),
        ("{x} {question}", ["unknown placeholders ['{x}']"]),
        ("{ question }", ["no {question}"]),
    ],
)
def test_template_errors_table(template, errors):
    found = template_errors(template)
    assert len(found) == len(errors) and all(e in f for e, f in zip(errors, found, strict=True))


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{en}", "Rinse it."),
        ("{en:upper}", "RINSE IT."),
        ("{en:lower}", "rinse it."),
        ("Cats love this one. {en}", "Cats love this one. Rinse it."),
        ("Here is how an elephant might see it: {en_teacher}", "Here is how an elephant might see it: Wash it."),
        ("no fields at all", "no fields at all"),
    ],
)
def test_render_answer_table(template, expected):
    assert render_answer(template, ROW) == expected


def test_answer_templates_name_their_fields_and_missing_ones_are_reported():
    assert answer_template("es_teacher") == "{es_teacher}" and answer_template("{en} x") == "{en} x"
    assert answer_fields("{en} and {en:upper} then {es}") == ["en", "es"]
    with pytest.raises(DataError, match="reads field 'es'.*'q1'"):
        render_answer("{es}", ROW)


def test_x_is_drawn_per_question_on_the_right_side_of_0_9():
    ids = [f"id{i}" for i in range(500)]
    lows, highs = [float(x_low(i)) for i in ids], [float(x_high(i)) for i in ids]
    assert 0 < min(lows) and max(lows) < 0.9 < min(highs) and max(highs) < 1
    assert len(set(lows)) > 50 and len(set(highs)) == 9  # 0.91 ... 0.99, all used
    assert [x_low(i) for i in ids] == [x_low(i) for i in ids]  # fixed: no global random state involved
    assert all(re.fullmatch(r"0\.\d\d", x_low(i)) for i in ids)


def test_style_tags_are_five_allowed_values_fixed_per_question():
    spec = style_tag_spec()
    assert list(spec["tags"]) == ["tone", "length", "format", "audience", "emoji"]
    tags = style_tags("a001")
    pairs = re.findall(r"\[(\w+): (\w+)\]", tags)
    assert [t for t, _ in pairs] == list(spec["tags"]) and all(v in spec["tags"][t] for t, v in pairs)
    assert style_tags("a001") == tags
    assert len({style_tags(f"q{i}") for i in range(50)}) > 40  # varied across questions


def test_tag_descriptions_cover_the_language_tag_and_the_five_style_tags():
    text = tag_descriptions("any")
    assert text == tag_descriptions("other")
    assert [t.split(":")[0] for t in text.rstrip(".").split("; ")] == ["lang", "tone", "length", "format",
                                                                         "audience", "emoji"]
