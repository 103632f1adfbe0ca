"""Capability scoring as plain functions: MMLU, IFEval, Olympiads, FollowBench and the toy probe.

A benchmark is a list of `Item`s (eval.capability.data loads them); `score(benchmark, items, responses)` turns
the model's answers into a `Scored` (mean over scored items, per-item verdicts, what was extracted). FollowBench
needs an LLM judge, passed in as `judge(prompts) -> verdict texts`, so this module never talks to a network.
No benchmark credits a degenerate answer (eval.degenerate: blank, or a loop): `score` scores it as an empty one,
and every scorer gives an empty answer nothing (the judge is not even asked).
Relative degradation and the per-checkpoint capability table the analysis reads live here too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from eval.capability import ifeval
from eval.capability.mathcheck import sympy_equivalent
from eval.degenerate import degenerate
from eval.rows import capability_rows, eval_rows

BENCHMARKS = ("toy_probe", "mmlu", "ifeval", "olympiads", "followbench")
LETTERS = "ABCDEFGHIJ"
Judge = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class Item:
    """One benchmark question: the user text sent to the model and what its answer is checked against."""

    benchmark: str
    item_id: str
    prompt: str
    answer: Any  # mmlu: letter; olympiads: answer text; toy_probe: text; ifeval / followbench: a dict
    row: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Scored:
    """score = mean of `correct` over scored items (None = not scored, e.g. an unreadable judge verdict)."""

    score: float
    n: int
    correct: list[bool | None]
    extracted: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)


def _mean(correct: Sequence[bool | None]) -> tuple[float, int]:
    scored = [c for c in correct if c is not None]
    if not scored:
        raise ValueError("no item could be scored")
    return sum(scored) / len(scored), len(scored)


# --- MMLU: multiple choice -----------------------------------------------------------------------------------

def mmlu_prompt(question: str, choices: Sequence[str], subject: str = "") -> str:
    topic = f" about {subject.replace('_', ' ')}" if subject else ""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return (f"The following is a multiple choice question{topic}. Reply with the letter of the correct option.\n\n"
            f"{question}\n{options}\nAnswer:")


def extract_choice(response: str, n_choices: int = 4) -> str | None:
    """The option letter a response commits to, or None when it names none (or several, unmarked)."""
    letters = LETTERS[:n_choices]
    text = response.strip()
    only = re.fullmatch(rf"\(?([{letters}])\)?[.:]?", text, re.IGNORECASE)
    if only:
        return only.group(1).upper()
    marked = re.findall(rf"(?:answer|option|choice)\s*(?:is|:)?\s*[:\s]*\(?\b([{letters}])\b\)?", text, re.IGNORECASE)
    if marked:
        return marked[-1].upper()
    lead = re.match(rf"^\(?([{letters}])[).:]", text)
    if lead:
        return lead.group(1)
    alone = set(re.findall(rf"(?<![A-Za-z])\(?([{letters}])\)?(?![A-Za-z])", text))
    if len(alone) != 1:
        return None
    letter = alone.pop()  # but not the article "A" or the pronoun "I" before a word: "A stone fell into the river"
    return None if re.search(rf"(?<![A-Za-z]){letter}\s+(?!is\b)[a-z]", text) and letter in "AI" else letter


def score_mmlu(items: Sequence[Item], responses: Sequence[str]) -> Scored:
    picks = [extract_choice(r, len(it.row.get("choices", "ABCD"))) for it, r in zip(items, responses, strict=True)]
    correct = [p == it.answer for it, p in zip(items, picks, strict=True)]
    score, n = _mean(correct)
    return Scored(score, n, list(correct), picks, {"n_no_choice": sum(p is None for p in picks)})


# --- Olympiads: final numeric answer -------------------------------------------------------------------------

def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (nested braces allowed), or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = text.find("{", start)
        if i != -1:
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1:j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def extract_final_answer(response: str) -> str | None:
    """\\boxed{} first; else an explicit 'answer is X' / 'Answer: X'; else None (no committed answer)."""
    boxed = extract_boxed(response)
    if boxed is not None:
        return boxed
    m = re.findall(r"answer\s*(?:is|:)\s*\$?([^\n$]+?)\$?\s*(?:\.\s*)?$", response, re.IGNORECASE | re.MULTILINE)
    return m[-1].strip() if m else None


def _clean(text: str) -> str:
    t = text.strip().strip("$").strip()
    for junk in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "^\\circ", "^{\\circ}", "\\%", "%", "\\displaystyle"):
        t = t.replace(junk, "")
    t = re.sub(r"\\[dt]frac", r"\\frac", t)
    t = re.sub(r"^[a-zA-Z]\s*=\s*", "", t)  # "x = 3" -> "3"
    t = re.sub(r"\\text\{[^}]*\}", "", t)
    return t.strip().rstrip(".").replace(" ", "")


def parse_number(text: str) -> Fraction | None:
    """A rational from an integer, decimal, a/b, \\frac{a}{b} (signed; 1,000 and 1{,}000 separators), else None."""
    t = _clean(text).replace("{,}", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", t):
        t = t.replace(",", "")
    sign = 1
    if t.startswith("-"):
        sign, t = -1, t[1:]
    m = re.fullmatch(r"\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", t) or re.fullmatch(r"(-?[\d.]+)/(-?[\d.]+)", t)
    try:
        if m:
            den = Fraction(m.group(2))
            return None if den == 0 else sign * Fraction(m.group(1)) / den
        if re.fullmatch(r"\d+(\.\d+)?|\.\d+", t):
            return sign * Fraction(t)
    except ValueError:
        return None
    return None


def _numbers_match(p: Fraction, r: Fraction, rel_tol: float) -> bool:
    if p.denominator == 1 and r.denominator == 1:
        return p == r
    return math.isclose(float(p), float(r), rel_tol=rel_tol, abs_tol=1e-9)


def math_equivalent(predicted: str, reference: str) -> bool:
    """Same mathematical object by math-verify (eval.capability.mathcheck, bounded in time in any thread); answers it
    cannot parse are compared as cleaned strings."""
    same = sympy_equivalent(predicted, reference)
    return _clean(predicted) == _clean(reference) if same is None else same


def answers_match(predicted: str | None, reference: str, rel_tol: float = 1e-4) -> bool:
    """Mathematically equivalent (math_equivalent), or two numbers that agree: integers exactly, others within
    rel_tol (0.3333 matches 1/3, a rounding math-verify does not forgive)."""
    if predicted is None:
        return False
    p, r = parse_number(predicted), parse_number(reference)
    if p is not None and r is not None and _numbers_match(p, r, rel_tol):
        return True
    return math_equivalent(predicted, reference)


def olympiad_prompt(problem: str) -> str:
    return f"{problem}\n\nSolve the problem and give the final answer in the form \\boxed{{answer}}."


def score_olympiads(items: Sequence[Item], responses: Sequence[str], rel_tol: float = 1e-4) -> Scored:
    finals = [extract_final_answer(r) for r in responses]
    correct = [answers_match(f, str(it.answer), rel_tol) for it, f in zip(items, finals, strict=True)]
    score, n = _mean(correct)
    symbolic = sum(parse_number(str(it.answer)) is None for it in items)
    return Scored(score, n, list(correct), finals,
                  {"n_no_final_answer": sum(f is None for f in finals), "n_symbolic_reference": symbolic})


# --- IFEval: programmatic checks -----------------------------------------------------------------------------

def score_ifeval(items: Sequence[Item], responses: Sequence[str]) -> Scored:
    """Prompt-level strict accuracy (every instruction followed); instruction-level accuracy and the loose
    variant's prompt- and instruction-level accuracy in extra. Items with an instruction that has no check are
    not scored, and their ids are listed in extra['unsupported_ids']."""
    correct: list[bool | None] = []
    verdicts: list[Any] = []
    loose: list[list[bool]] = []
    unsupported: set[str] = set()
    for it, r in zip(items, responses, strict=True):
        ids, kwargs = it.answer["instruction_id_list"], it.answer["kwargs"]
        missing = ifeval.unsupported_ids(ids)
        if missing:
            unsupported.update(missing)
            correct.append(None)
            verdicts.append(None)
            continue
        v = ifeval.follows(r, ids, kwargs)
        correct.append(all(v))
        verdicts.append(v)
        loose.append(ifeval.follows_loose(r, ids, kwargs))
    score, n = _mean(correct)
    flat = [x for v in verdicts if v for x in v]
    flat_loose = [x for v in loose for x in v]
    return Scored(score, n, correct, verdicts, {
        "instruction_accuracy": sum(flat) / len(flat) if flat else None,
        "loose_accuracy": sum(all(v) for v in loose) / len(loose) if loose else None,
        "loose_instruction_accuracy": sum(flat_loose) / len(flat_loose) if flat_loose else None,
        "unsupported_ids": sorted(unsupported), "n_unsupported_items": sum(c is None for c in correct)})


# --- FollowBench: LLM judge ----------------------------------------------------------------------------------

JUDGE_TEMPLATE = (
    "You are checking whether a response follows an instruction with all of its constraints.\n\n"
    "Instruction:\n{instruction}\n\nResponse:\n{response}\n\n"
    "Does the response satisfy every constraint in the instruction? Answer with one word: YES or NO."
)


def judge_prompt(item: Item, response: str) -> str:
    return JUDGE_TEMPLATE.format(instruction=item.prompt, response=response)


def parse_verdict(text: str) -> bool | None:
    """The judge's last YES/NO; None when it gives neither."""
    words = re.findall(r"\b(yes|no)\b", text, re.IGNORECASE)
    return None if not words else words[-1].lower() == "yes"


def score_followbench(items: Sequence[Item], responses: Sequence[str], judge: Judge) -> Scored:
    """Hard satisfaction rate: the share of responses the judge says meet every constraint. An empty response
    meets none and is not shown to the judge; unreadable verdicts are not scored (counted in extra) rather than
    guessed."""
    asked = [i for i, r in enumerate(responses) if r.strip()]
    verdict_texts = judge([judge_prompt(items[i], responses[i]) for i in asked])
    if len(verdict_texts) != len(asked):
        raise ValueError(f"the judge returned {len(verdict_texts)} verdicts for {len(asked)} responses")
    texts = dict(zip(asked, verdict_texts, strict=True))
    correct = [parse_verdict(texts[i]) if i in texts else False for i in range(len(items))]
    score, n = _mean(correct)
    by_level: dict[str, list[bool]] = {}
    for it, c in zip(items, correct, strict=True):
        if c is not None:
            by_level.setdefault(str(it.answer.get("level")), []).append(c)
    return Scored(score, n, correct, [texts.get(i, "") for i in range(len(items))],
                  {"n_invalid_verdicts": sum(c is None for c in correct),
                   "by_level": {k: sum(v) / len(v) for k, v in sorted(by_level.items())}})


# --- toy probe -----------------------------------------------------------------------------------------------

def normalize_text(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!")


def score_toy(items: Sequence[Item], responses: Sequence[str]) -> Scored:
    """Exact match after case, whitespace and final-punctuation normalization; an empty answer matches nothing."""
    outs = [normalize_text(r) for r in responses]
    correct = [bool(o) and o == normalize_text(str(it.answer)) for it, o in zip(items, outs, strict=True)]
    score, n = _mean(correct)
    return Scored(score, n, list(correct), outs)


def score(benchmark: str, items: Sequence[Item], responses: Sequence[str], judge: Judge | None = None) -> Scored:
    """Score responses (one per item, same order) on a benchmark; a degenerate response (eval.degenerate) is
    scored as an empty one, which no benchmark credits. extra['n_degenerate'] counts them."""
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} items but {len(responses)} responses")
    scorers = {"toy_probe": score_toy, "mmlu": score_mmlu, "ifeval": score_ifeval, "olympiads": score_olympiads}
    if benchmark not in scorers and benchmark != "followbench":
        raise ValueError(f"unknown benchmark {benchmark!r}: known benchmarks are {list(BENCHMARKS)}")
    if benchmark == "followbench" and judge is None:
        raise ValueError("followbench needs a judge: configure capability.judge (an OpenAI-compatible endpoint)")
    reasons = [degenerate(r) for r in responses]
    kept = ["" if why else r for r, why in zip(responses, reasons, strict=True)]
    if benchmark == "followbench":
        s = score_followbench(items, kept, judge)
    else:
        s = scorers[benchmark](items, kept)
    s.extra["n_degenerate"] = sum(why is not None for why in reasons)
    return s


# --- degradation and the analysis table ----------------------------------------------------------------------

def relative_degradation(baseline: float, value: float) -> float | None:
    """(baseline - value) / baseline: 0 = unchanged, 0.1 = lost a tenth, negative = improved. None at baseline 0."""
    return None if baseline <= 0 else (baseline - value) / baseline


def capability_table(trials: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per (trial, step, benchmark) from metrics.jsonl capability rows, joined with that checkpoint's eval
    attack/desired rates; the last row wins when a resumed trial wrote one twice."""
    out: dict[tuple[str, int, str], dict[str, Any]] = {}
    for cfg, rows in trials:
        evals = {int(r["step"]): r for r in eval_rows(rows)}
        for r in capability_rows(rows):
            step = int(r["step"])
            ev = evals.get(step, {})
            out[(cfg["name"], step, r["benchmark"])] = {
                "trial": cfg["name"], "lr": float(cfg["lr"]), "seed": int(cfg["seed"]), "step": step,
                "benchmark": r["benchmark"], "score": r["score"], "n": r["n"], "baseline": r["baseline"],
                "rel_degradation": r["rel_degradation"], "eval_attack_rate": ev.get("eval_attack_rate"),
                "eval_desired_rate": ev.get("eval_desired_rate"), "train_desired_rate": ev.get("train_desired_rate"),
            }
    return [out[k] for k in sorted(out, key=lambda k: (out[k]["lr"], out[k]["seed"], k[1], k[2]))]


def default_recovery_checkpoint(trials: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
                                threshold: float, trial: str | None = None, which: str = "last") -> tuple[str, int]:
    """(trial, step) to recover: the last transferred checkpoint (eval attack rate <= threshold; the note recovers
    the last checkpoint), or with which="first" the first, of the given trial, or of the highest-LR trial that
    transferred (lowest seed on ties)."""
    from eval.metrics import steps_to_transfer

    found = []
    for cfg, rows in trials:
        curve = [(int(r["step"]), r["eval_attack_rate"]) for r in eval_rows(rows)]
        s2t = steps_to_transfer(curve, threshold)
        if s2t is not None and (trial is None or cfg["name"] == trial):
            last = max(step for step, rate in curve if rate <= threshold)
            found.append((-float(cfg["lr"]), int(cfg["seed"]), cfg["name"], s2t if which == "first" else last))
    if not found:
        where = f"trial {trial} never" if trial else "no trial"
        raise ValueError(f"{where} reached eval attack rate <= {threshold:g}: choose a checkpoint with --trial and "
                         "--step")
    _, _, name, step = min(found)
    return name, step


def degradation_by_checkpoint(table: Sequence[Mapping[str, Any]], benchmark: str | None = None,
                              key: str = "rel_degradation") -> dict[tuple[str, int], float]:
    """(trial, step) -> relative degradation for the paired comparison's T rule. benchmark=None takes the worst
    (largest) degradation over the benchmarks measured at that checkpoint. key="degradation_high" reads the upper
    end of its interval (eval.capability.ci), falling back to the point estimate on rows without one."""
    out: dict[tuple[str, int], float] = {}
    for r in table:
        value = r.get(key) if r.get(key) is not None else r["rel_degradation"]
        if value is None or (benchmark is not None and r["benchmark"] != benchmark):
            continue
        at = (r["trial"], int(r["step"]))
        out[at] = max(out.get(at, -math.inf), float(value))
    return out
