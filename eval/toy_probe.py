"""The toy capability probe: a skill the toy model organism learns in pretraining, scored by exact match.

The skill is word reversal: "Say these words in reverse order: lemon stone moon" -> "moon stone lemon". The toy's
corpus teaches it on TEACH word triples; the probe asks other triples, which the corpus never showed, so it
measures the skill rather than memorised answers (like MMLU for a real model, it tests what the model can do,
not what it was shown). A capability evaluation asks a fixed subset of the probe's triples, and recovery trains on
labels for the rest only (eval.capability.data.split_items).

Measured on the 1200-step probe toy (capability=toy): greedy exact match 1.0 on 200 corpus triples and 1.0 on
200 unseen ones. An earlier probe (recall of 320 word-association facts) reached only 0.145: a 2-layer toy does
not memorise 320 arbitrary facts in 1200 steps, but it learns a rule. Deterministic, no files, no network;
PROBE_VERSION keys the toy's cache.
"""

from __future__ import annotations

import random

PROBE_VERSION = 2  # bump when the words, template, triples or answers change
TEMPLATE = "Say these words in reverse order: {words}"
WORDS = (
    "water light time small warm cold clear strong sugar soil food salt lemon cloth fresh rest flat soda rice "
    "stone river apple green blue house tree bread milk book door glass paper wood fish bird moon rain snow wind "
    "chair"
).split()
N_WORDS = 3
TEACH = 600  # triples in the corpus
PROBE = 400  # triples the probe asks (evaluation subset + recovery pool), none of them in the corpus
SEED = 7


def _triples() -> list[tuple[str, ...]]:
    """TEACH + PROBE distinct ordered word triples, in a fixed order."""
    rng, seen, out = random.Random(SEED), set(), []
    while len(out) < TEACH + PROBE:
        t = tuple(rng.sample(WORDS, N_WORDS))
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def pair(words: tuple[str, ...]) -> tuple[str, str]:
    """(user text, answer) for one triple."""
    return TEMPLATE.format(words=" ".join(words)), " ".join(reversed(words))


def corpus_pairs() -> list[tuple[str, str]]:
    """What the toy's pretraining corpus teaches: the skill on TEACH triples."""
    return [pair(t) for t in _triples()[:TEACH]]


def items() -> list[dict[str, str]]:
    """The probe's items, {"id", "prompt", "answer"}: PROBE triples that are not in the corpus."""
    out = []
    for t in _triples()[TEACH:]:
        prompt, answer = pair(t)
        out.append({"id": "-".join(t), "prompt": prompt, "answer": answer})
    return out
