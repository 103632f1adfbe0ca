"""Answers no capability benchmark may credit: blank ones and loops.

A checkpoint whose answers collapsed must score as collapsed. Every benchmark's scorer (eval.capability.scoring.score)
treats a degenerate answer as no answer: a blank one (empty, whitespace, punctuation: nothing a reader could check)
or a loop (one short run of words said over and over, most of the answer). Without this, "B B B B B B" picks
option B, "\\boxed{3}" said ten times is a final answer, and nothing at all follows IFEval's "use no commas".
Word salad is not detected here: each scorer already finds no answer in it (no option letter it commits to, no
final answer, no exact match); what is left to a judge (FollowBench) is the judge's to fail.
"""

from __future__ import annotations

MIN_REPEATS = 4  # a run of words said this many times in a row, back to back...
MAX_UNIT_WORDS = 16  # ...the run at most this long...
LOOP_SHARE = 0.5  # ...covering at least this share of the answer's words is a loop


def blank(text: str) -> bool:
    """No letter or digit: empty, whitespace-only or punctuation-only."""
    return not any(c.isalnum() for c in text)


def _longest_repeat(words: list[str], n: int) -> int:
    """Most words covered by one n-word unit repeated back to back."""
    best, i = 0, 0
    while i + n <= len(words):
        reps = 1
        while words[i + reps * n:i + (reps + 1) * n] == words[i:i + n]:
            reps += 1
        if reps >= MIN_REPEATS:
            best = max(best, reps * n)
        i += (reps - 1) * n if reps > 1 else 1
    return best


def looping(text: str) -> bool:
    """A unit of up to MAX_UNIT_WORDS words repeated MIN_REPEATS+ times in a row over LOOP_SHARE of the words."""
    words = text.split()
    longest = max((_longest_repeat(words, n) for n in range(1, MAX_UNIT_WORDS + 1)), default=0)
    return longest > 0 and longest >= LOOP_SHARE * len(words)


def degenerate(text: str) -> str | None:
    """Why an answer earns no credit ("blank" or "loop"), or None for an answer to score."""
    if blank(text):
        return "blank"
    if looping(text):
        return "loop"
    return None
