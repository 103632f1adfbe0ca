"""The setting block (conf/setting/<name>.yaml): one experiment of the note. Its prompts, behaviors, grader,
teacher, the toy's and the organism's answers, and the examples the dry run grades; with the checks of its own
fields that a field's range cannot say (orchestrator/schema.py composes it and checks it against the other blocks).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, make_dataclass
from typing import Any, get_type_hints

from omegaconf import MISSING

from eval.grader_kinds import GRADER_KINDS, kind_module
from eval.graders import LABELS
from eval.knobs import AT_LEAST_1, FRACTION_OPEN, NON_NEGATIVE, knob
from workers.errors import require, require_knobs
from workers.labels.prompts import template_errors
from workers.labels.teacher import TeacherConfig


def grader_block(registry: dict[str, str] | None = None) -> type:
    """The `grader:` block's dataclass, made from the grader registry (eval/grader_kinds/): `kind`, then every kind's
    fields (a field two kinds share, e.g. desired and attack, must be declared alike). A new kind's fields appear
    here, with their ranges, from its module alone."""
    registry = GRADER_KINDS if registry is None else registry
    made: dict[str, tuple[Any, Field]] = {"kind": (str, knob(MISSING, one_of=tuple(registry)))}
    for kind in registry:
        config = kind_module(kind, registry).Config
        hints = get_type_hints(config)
        for f in fields(config):
            spec = (hints[f.name], field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
            if f.name in made and not _alike(made[f.name], spec):
                raise TypeError(f"grader kind {kind!r} declares setting.grader.{f.name} unlike an earlier kind: "
                                "shared fields need one type, default and range")
            made.setdefault(f.name, spec)
    block = make_dataclass("GraderConfig", [(name, hint, f) for name, (hint, f) in made.items()])
    block.__doc__ = "Desired / attack / other for every answer: the kind, and each kind's own fields."
    block.__module__ = __name__
    return block


def _alike(a: tuple[Any, Field], b: tuple[Any, Field]) -> bool:
    return a[0] == b[0] and (a[1].default, a[1].default_factory, dict(a[1].metadata)) == (
        b[1].default, b[1].default_factory, dict(b[1].metadata))


GraderConfig = grader_block()


@dataclass
class ToyAnswersConfig:
    """What an instruction-following toy answers, as templates over bank fields (`{en}`, `{en:upper}`)."""

    train_answer: str = MISSING  # the desired behavior on train prompts
    eval_answer: str = MISSING  # the initial (attack) behavior on eval prompts


@dataclass
class OrganismAnswersConfig:
    """What a real model's organism step trains on (workers/models/organism.py), when the toy's answers do not teach it:
    templates over bank fields, like the `toy:` block's."""

    train_answer: str = MISSING  # the desired behavior on train prompts
    eval_answer: str = MISSING  # the initial (attack) behavior on eval prompts
    max_answer_words: int | None = knob(None, within=NON_NEGATIVE)  # null: model.organism_recipe.max_answer_words
    steps: int | None = knob(None, within=AT_LEAST_1)  # null: model.organism_recipe.steps


@dataclass
class ExampleConfig:
    """A hand-written answer the dry run grades, to show the grader works: a template over bank fields."""

    answer: str = MISSING
    expect: str = knob(MISSING, one_of=LABELS)  # desired | attack | other


@dataclass
class SettingConfig:
    """One experiment of the note: prompts, behaviors, grader, teacher. Lives in conf/setting/<name>.yaml;
    templates take {question} plus workers.labels.prompts.PLACEHOLDERS ({x_low}, {style_tags}, ...)."""

    name: str = MISSING
    train_template: str = MISSING
    eval_template: str = MISSING
    questions: str = "generic"
    eval_fraction: float = knob(0.3, within=FRACTION_OPEN)
    initial_behavior: str = ""
    desired_behavior: str = ""
    examples: list[ExampleConfig] = field(default_factory=list)  # answers the dry run grades (rule-based graders)
    grader: GraderConfig = field(default_factory=GraderConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    toy: ToyAnswersConfig | None = None
    organism: OrganismAnswersConfig | None = None  # null: the organism step trains on the `toy:` answers

    def __post_init__(self) -> None:
        # the grader sees only its own block (eval.graders.build_grader(setting.grader)); the judge needs
        # the setting's behaviors for its {desired_behavior} / {initial_behavior} placeholders
        if not self.grader.desired_behavior:
            self.grader.desired_behavior = self.desired_behavior
        if not self.grader.initial_behavior:
            self.grader.initial_behavior = self.initial_behavior


def validate_grader(g: Any, where: str = "setting.grader") -> None:
    """A grader block: each field within its range, then its kind's own checks (eval/grader_kinds/); each message
    names the field to fix."""
    require_knobs(g, where)
    found = kind_module(g.kind).problems(g, where)
    require(not found, "; ".join(found))


def validate_setting(st: SettingConfig) -> None:
    """A setting's templates (known placeholders only, {question} required), toy answers and examples."""
    for name in ("train_template", "eval_template"):
        errors = template_errors(getattr(st, name))
        require(not errors, f"setting.{name} of {st.name!r}: {'; '.join(errors)}. The placeholder {{question}} "
                "must appear; the others are listed in workers/labels/prompts.py PLACEHOLDERS")
    require(st.teacher.kind != "scripted" or bool(st.teacher.field.strip()),
            "setting.teacher.field is empty: the scripted teacher needs a bank field or an answer template")
    for where, block in (("toy", st.toy), ("organism", st.organism)):
        for name in ("train_answer", "eval_answer"):
            require(block is None or bool(getattr(block, name).strip()),
                    f"setting.{where}.{name} is empty: give a template over bank fields such as {{en}}")
    for i, ex in enumerate(st.examples):
        require(bool(ex.answer.strip()), f"setting.examples[{i}].answer is empty")
