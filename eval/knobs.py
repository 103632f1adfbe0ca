"""A config knob in one place: its dataclass field carries what it may hold, and one checker reads that.

    lora_dropout: float = knob(0.0, within=Interval(0, 1, hi_open=True))   # numbers: an interval
    loss: str = knob("answer_chunks", one_of=("answer_chunks", "hf"))      # enumerations: the known values
    pack: Any = knob(AUTO, within=AT_LEAST_1, kind=int)                    # planner-owned: "auto" or an int

`knob_errors(cfg)` walks any tree of config dataclasses and returns one message per value that breaks its field's
rule, naming the field as the command line spells it (`train.lora_dropout=1.5: must be in [0, 1)`). A field that
is null where the schema allows it is not checked; a list is checked element by element. Adding a numeric knob is
its YAML line and its field, with its range: nothing else (tests/unit/test_ranges.py refuses a numeric field that
has none).

It lives at the lowest layer (eval/ imports nothing of the project), so that a config block may sit beside the
code that reads it in any layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

# Planner-owned fields hold AUTO ("auto") until orchestrator/plan/resolve.py replaces them with the plan's numbers; an
# explicit value wins but is checked against the plan's memory arithmetic. Their type is Any (int/float/bool or
# "auto"): OmegaConf has no unions of a primitive with a string, and `null` would read as "unset", not "plan it";
# their knob's `kind` says which.
AUTO = "auto"


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == AUTO


def require_planned(block: Any, where: str, fix: str) -> None:
    """Refuse a config block whose planner-owned fields (typed Any because they may hold AUTO; a string field such
    as train.dist_backend=auto is a value of its own) still hold AUTO: a worker cannot run from those. Names them as
    the command line spells them (`where` is the block's prefix), and the fix."""
    left = [f"{where}.{f.name}" for f in fields(block) if f.type in ("Any", Any) and is_auto(getattr(block, f.name))]
    if left:
        raise ValueError(f"{where} still holds auto in {left}: {fix}")


@dataclass(frozen=True)
class Interval:
    """lo <= x <= hi, with either end open or absent (None)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""  # said after the range, e.g. what the number is

    def holds(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self) -> str:
        return f"{self._bounds()} ({self.note})" if self.note else self._bounds()

    def _bounds(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "finite"


POSITIVE = Interval(0, lo_open=True)  # > 0
NON_NEGATIVE = Interval(0)  # >= 0
AT_LEAST_1 = Interval(1)  # counts
FRACTION_OPEN = Interval(0, 1, lo_open=True, hi_open=True)  # (0, 1): a threshold strictly inside
FRACTION_UP_TO_1 = Interval(0, 1, lo_open=True)  # (0, 1]: a share that may be all
PROBABILITY = Interval(0, 1)  # [0, 1]

# the metadata keys a knob sets on its field
WITHIN, ONE_OF, KIND = "within", "one_of", "kind"


def knob(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
         within: Interval | None = None, one_of: tuple[str, ...] | None = None, kind: type | None = None) -> Any:
    """A dataclass field with its rule: a range for numbers, known values for an enumeration (a list field: for each
    element). `kind` types a field whose annotation is Any because it may also hold AUTO (OmegaConf has no union of
    a number and a string)."""
    meta = {key: value for key, value in ((WITHIN, within), (ONE_OF, one_of), (KIND, kind)) if value is not None}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def allowed_values(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The known values of an enumerated field, or None."""
    values = f.metadata.get(ONE_OF)
    return tuple(values) if values is not None else None


def knob_errors(obj: Any, path: str = "") -> list[str]:
    """One message per value out of its range, of the wrong kind or not among its known values, each naming the
    field as the command line spells it (`path` is its block's prefix, e.g. "train."), the value and what is
    allowed. `obj` is a config dataclass; nested blocks and lists of blocks are walked."""
    errors: list[str] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        where = f"{path}{f.name}"
        if is_dataclass(value):
            errors += knob_errors(value, f"{where}.")
            continue
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, item in items:
            if is_dataclass(item):
                errors += knob_errors(item, f"{where}[{i}].")
            elif item is not None and not (item == AUTO and f.default == AUTO):  # null, or the plan's to fill in
                problem = value_error(f, item)
                if problem:
                    errors.append(f"{where if i is None else f'{where}[{i}]'}={item!r}: {problem}")
    return errors


def value_error(f: dataclasses.Field, item: Any) -> str | None:
    """What is wrong with one value of field `f` ("must be ..."), or None."""
    planned = "auto (the plan's) or " if f.default == AUTO else ""
    kind, rule, values = f.metadata.get(KIND), f.metadata.get(WITHIN), allowed_values(f)
    number = isinstance(item, (int, float)) and not isinstance(item, bool)
    if values is not None and str(item) not in values:
        return f"must be one of {', '.join(values)}"
    if kind is bool and not isinstance(item, bool):
        return f"must be {planned}true or false"
    if kind is int and type(item) is not int:
        return f"must be {planned}an integer{' ' + rule.describe() if rule else ''}"
    if rule is not None and (not number or not rule.holds(float(item))):
        return f"must be {planned}{rule.describe()}"
    return None
