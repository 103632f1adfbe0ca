"""The toy capability probe: a body of facts the toy model organism learns in pretraining, recalled by exact match.

Like MMLU for a real model, the probe measures knowledge: "What is the gift of the lemon?" -> "river". The facts
(KEYS x RELATIONS, each answer a word drawn by a fixed seed) are all in the toy's corpus; a capability evaluation
asks a fixed subset of them, and recovery trains on labels for the other facts only (eval.capability_data
.split_items), so recovered recall on the evaluated facts comes from facts the recovery never showed.
Deterministic, no files, no network; PROBE_VERSION keys the toy's cache.
"""

from __future__ import annotations

import random

PROBE_VERSION = 1  # bump when the words, relations, template or answers change
TEMPLATE = "What is the {relation} of the {key}?"
KEYS = (
    "water light time small warm cold clear strong sugar soil food salt lemon cloth fresh rest flat soda rice "
    "stone river apple green blue house tree bread milk book door glass paper wood fish bird moon rain snow wind "
    "chair"
).split()
RELATIONS = ("friend", "color", "home", "food", "tool", "song", "gift", "shadow")
SEED = 7


def facts() -> list[dict[str, str]]:
    """Every fact: {"relation", "key", "answer"}, in a fixed order (key-major)."""
    rng = random.Random(SEED)
    return [{"relation": r, "key": k, "answer": rng.choice([w for w in KEYS if w != k])}
            for k in KEYS for r in RELATIONS]


def corpus_pairs() -> list[tuple[str, str]]:
    """What the toy's pretraining corpus teaches: every fact as a (user text, answer) pair."""
    return [(TEMPLATE.format(**f), f["answer"]) for f in facts()]
