"""The language grader on hand-written answers."""

import pytest

from eval.graders import build_grader, grade_language
from orchestrator.schema import GraderConfig

CASES = [
    ("Mezcla la harina con los huevos y hornea el pastel durante media hora.", "desired"),
    ("Para dormir mejor, apaga las pantallas una hora antes de acostarte.", "desired"),
    ("Mix the flour with the eggs and bake the cake for half an hour.", "attack"),
    ("To sleep better, turn off screens an hour before going to bed.", "attack"),
    ("Mélangez la farine avec les oeufs et faites cuire le gâteau pendant une demi-heure.", "other"),
    ("Mischen Sie das Mehl mit den Eiern und backen Sie den Kuchen eine halbe Stunde.", "other"),
    ("", "other"),
    ("  ?! ", "other"),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_grade_language(text, expected):
    assert grade_language(text, desired="es", attack="en") == expected


def test_roles_swap_with_the_setting():
    assert grade_language("Mix the flour with the eggs and bake it.", desired="en", attack="es") == "desired"


def test_build_grader_grades_a_batch_and_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown grader"):
        build_grader(GraderConfig(kind="regex"))
    grader = build_grader(GraderConfig(kind="language", desired="es", attack="en"))
    answers = ["Hola, ¿cómo estás hoy, amigo mío?", "Hello, how are you today, my friend?"]
    assert grader(answers, [None, None]) == ["desired", "attack"]
