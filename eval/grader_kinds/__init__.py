"""Grader kinds: each is one module, and this registry names them.

A kind's module defines
    Config                   a dataclass: the fields of a setting's `grader:` block that this kind reads, each
                             range on its field (eval/knobs.py)
    problems(cfg, where)     what those fields cannot say alone, as messages naming the field to fix ([] if none)
    build(cfg) -> Grader     the batch grader (eval.grades.Grader)
and adding a kind is that module plus one line in GRADER_KINDS. The setting's `grader:` block
(workers/labels/setting.py GraderConfig) is made from the registry: `kind` and every kind's fields, each kind reading
its own. Kinds that need more than pure code (the LLM judge's HTTP client) live outside eval/ and are imported by
name only when a setting asks for them, so eval/ stays pure (tests/unit/test_import_graph.py checks each entry).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

GRADER_KINDS: dict[str, str] = {
    "language": "eval.grader_kinds.language",
    "keyword": "eval.grader_kinds.keyword",
    "case": "eval.grader_kinds.case",
    "code": "eval.grader_kinds.code",
    "judge": "workers.labels.judge",  # an LLM judge over HTTP (workers/labels/endpoint.py)
}


def kind_module(kind: str, registry: dict[str, str] | None = None) -> ModuleType:
    """The module of a grader kind; ValueError names the known kinds, ImportError what failed to import."""
    registry = GRADER_KINDS if registry is None else registry
    if kind not in registry:
        raise ValueError(f"unknown grader kind {kind!r}: known graders are {list(registry)}")
    try:
        return import_module(registry[kind])
    except ImportError as err:
        raise ImportError(f"grader kind {kind!r} needs the module {registry[kind]}, which could not be imported "
                          f"({err}); check that it exists in this checkout and that its dependencies are installed, "
                          "or use another grader kind") from err
