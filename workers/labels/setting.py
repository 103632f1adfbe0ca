"""The setting block (conf/setting/<name>.yaml): one experiment of the note. Its prompts, behaviors, grader,
teacher, the toy's and the organism's answers, and the examples the dry run grades; with the checks of its own
fields that a field's range cannot say (orchestrator/schema.py composes it and checks it against the other blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from eval.graders import CASE_STYLES, CODE_BEHAVIORS, GRADERS, LABELS
from eval.knobs import AT_LEAST_1, FRACTION_OPEN, FRACTION_UP_TO_1, NON_NEGATIVE, POSITIVE, knob
from workers.errors import require, require_knobs
from workers.labels.endpoint import EndpointConfig
from workers.labels.prompts import template_errors
from workers.labels.teacher import TeacherConfig


@dataclass
class GraderConfig:
    """Desired / attack / other for every answer. One flat block; each kind reads its own fields."""

    kind: str = knob(MISSING, one_of=GRADERS)  # language | keyword | case | code | judge
    desired: str | None = None  # language: ISO 639-1 code; case: "normal" or "caps"
    attack: str | None = None  # language: ISO 639-1 code; case: "normal" or "caps"
    desired_keywords: list[str] = field(default_factory=list)  # keyword: any of these (whole words) = desired
    attack_keywords: list[str] = field(default_factory=list)  # keyword: any of these = attack
    # case: share of upper-case letters at or above which an answer is all caps
    caps_ratio: float = knob(0.7, within=FRACTION_UP_TO_1)
    timeout_s: float = knob(10.0, within=POSITIVE)  # code: seconds for one answer's tests in the sandbox
    judge_prompt: str = ""  # judge: template over {prompt} {response} {desired_behavior} {initial_behavior}
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)  # judge
    # judge: the behaviors the judge is told about; empty = the setting's own (copied in by SettingConfig)
    desired_behavior: str = ""
    initial_behavior: str = ""


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


def validate_grader(g: GraderConfig, where: str = "setting.grader") -> None:
    """Per-kind checks of a grader block (eval.graders builds it); each message names the field to fix."""
    require_knobs(g, where)
    pairs = {"case": CASE_STYLES, "code": CODE_BEHAVIORS}
    if g.kind == "language":
        for name in ("desired", "attack"):
            value = getattr(g, name)
            require(isinstance(value, str) and len(value) == 2 and value.isalpha() and value.islower(),
                    f"{where}.{name}={value!r}: give a two-letter ISO 639-1 language code, e.g. es or en")
        require(g.desired != g.attack, f"{where}.desired and .attack are both {g.desired!r}: they must differ")
    elif g.kind == "keyword":
        for name in ("desired_keywords", "attack_keywords"):
            words = list(getattr(g, name))
            require(len(words) > 0 and all(isinstance(w, str) and w.strip() for w in words),
                    f"{where}.{name}={words}: give a non-empty list of non-empty words, plural forms included, "
                    f"e.g. [elephant, elephants]")
        shared = {w.lower() for w in g.desired_keywords} & {w.lower() for w in g.attack_keywords}
        require(not shared, f"{where}: {sorted(shared)} are both desired and attack keywords; remove them from one")
    elif g.kind in pairs:
        allowed = pairs[g.kind]
        require(g.desired in allowed and g.attack in allowed and g.desired != g.attack,
                f"{where}.desired={g.desired!r}, .attack={g.attack!r}: for kind {g.kind!r} they must be two "
                f"different values of {list(allowed)}")
    elif g.kind == "judge":
        require(bool(g.judge_prompt and g.judge_prompt.strip()),
                f"{where}.judge_prompt is empty: give the judge's instructions, a template over "
                f"{{prompt}} {{response}} {{desired_behavior}} {{initial_behavior}}")
        require("{response}" in g.judge_prompt,
                f"{where}.judge_prompt must contain the placeholder {{response}}: the judge has to see the answer")


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
