"""Is an answer text at all? An offline, CPU-only coherence measure of one answer; pure, table-tested.

`coherence(answer)` names the first way an answer is broken, or None when it reads as text:
- "empty": fewer than MIN_WORDS words of prose (code left out; an answer that is only code is not empty);
- "loop": the same words over and over (a repeated-trigram share of at least LOOP_SHARE, or one word making
  up LOOP_WORD_SHARE of a long answer): "Elephants elephants elephants ...";
- "word salad": non-words. A word is real when it is in the lexicon: pyspellchecker's English and Spanish
  dictionaries (shipped in its wheel), every word of the question banks, function words. Under SALAD_KNOWN real
  words is salad; so is SALAD_UNKNOWN or more non-words among the lower-case words (capitalized words may be
  names). The toy's salad ("Tomes water, use about your mains anddow fares through using theich and rut.") is
  real words in no order with glued fragments between: its fragments give it away.

Why not the model's own log-probability: it needs the engine, and a collapsed model scores its own salad as
likely. The lexicon check reads only the text, so a samples file can be re-measured anywhere.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

BANKS = Path(__file__).resolve().parents[1] / "workers" / "data" / "questions"
MIN_WORDS = 3  # fewer words of prose than this is no answer
LOOP_SHARE = 0.4  # share of word trigrams that repeat an earlier one
LOOP_WORD_SHARE = 0.5  # share of a long answer taken by its most common word
LOOP_MIN_WORDS = 6
SALAD_KNOWN = 0.35  # below this share of real words: salad
SALAD_UNKNOWN = 0.2  # this share of non-words among the checked words: salad (real answers: a name, a typo)
SALAD_MIN_CHECKED = 5
SALAD_SHORT_UNKNOWN = 2
DICTIONARIES = ("en", "es", "fr", "de", "pt", "it")  # pyspellchecker's word lists the lexicon holds
FUNCTION_WORDS = frozenset("""a an the and or but if of to in on at by for with from as is are was were be been it
this that these those i you he she we they my your our their not no yes do does did can will would should could
el la los las un una y o de del en con por para que es son fue ser no sí se lo le les mi tu su muy más""".split())

_WORD = re.compile(r"[^\W\d_]+")
NOT_PROSE = re.compile(  # code fences (closed or cut off), inline code, URLs
    r"```.*?(?:```|\Z)|`[^`\n]*`|https?://\S+", re.DOTALL)
# a line of code outside a fence: an indented line, a line opening with a (lower-case) Python keyword, an
# assignment, or a line ending in ; { or }. Prose with a parenthesis ("Bake at 180 C (350 F)") stays prose.
_CODE_LINE = re.compile(r"^(?:\s{4,}\S|\s*(?:def|class|return|import|from|if|elif|else|for|while|try|except|with|"
                        r"assert|print)\b.*|\s*[\w.\[\]]+\s*[-+*/]?=(?!=).*|.*[;{}]\s*$)")


# The languages the language rule tells apart (ISO 639-1): the widely written ones. Over py3langid's 97 a short
# answer spreads its probability over near neighbours (Spanish read as Galician, Aragonese, Extremaduran) and no
# language gets a clear share; a setting's own desired and attack languages are always added.
LANGUAGES = ("ar", "ca", "cs", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "hu", "id", "it", "ja", "ko", "nl",
             "no", "pl", "pt", "ro", "ru", "sv", "tr", "uk", "vi", "zh")


@lru_cache(maxsize=8)
def _identifier(among: tuple[str, ...] | None = None) -> Any:
    """py3langid's model ships inside its wheel: nothing is downloaded. `among` restricts its languages."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if among:
        identifier.set_languages(list(among))
    return identifier


def detect_language(text: str, among: tuple[str, ...] | None = None) -> tuple[str, float]:
    """(ISO 639-1 code, normalized probability) of the most likely language, of all py3langid's or of `among`."""
    lang, prob = _identifier(among).classify(text)
    return lang, float(prob)


def prose(text: str) -> str:
    """The answer's prose: fenced code, inline code, URLs and code-looking lines left out."""
    unfenced = NOT_PROSE.sub(" ", text or "")
    return "\n".join(line for line in unfenced.splitlines() if not _CODE_LINE.match(line))


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text or "")]


@lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    """Real words: the English and Spanish dictionaries shipped in pyspellchecker's wheel (nothing is downloaded),
    every word of the shipped question banks, and function words."""
    from spellchecker import SpellChecker

    found: set[str] = set(FUNCTION_WORDS)
    for language in DICTIONARIES:
        found.update(SpellChecker(language=language, distance=1).word_frequency.dictionary)
    for path in sorted(BANKS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            found.update(w for v in json.loads(line).values() if isinstance(v, str) for w in words(v))
    return frozenset(found)


def known_share(tokens: list[str]) -> float:
    """Share of tokens that are real words (in the lexicon, or one letter)."""
    lex = lexicon()
    if not tokens:
        return 0.0
    return sum(len(t) == 1 or t in lex for t in tokens) / len(tokens)


def checked_words(text: str) -> list[str]:
    """The words the salad rule checks: lower-case as written (a capitalized word may be a name the dictionary
    lacks: "Pothos"); in an all-caps text, every word."""
    raw = _WORD.findall(text or "")
    upper = sum(w.isupper() for w in raw)
    keep = raw if raw and upper / len(raw) > 0.5 else [w for w in raw if not w[0].isupper()]
    return [w.lower() for w in keep]


def loop_share(tokens: list[str]) -> float:
    """Share of word trigrams that repeat an earlier trigram of the answer."""
    grams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_loop(tokens: list[str]) -> bool:
    if len(tokens) < LOOP_MIN_WORDS:
        return False
    top = Counter(tokens).most_common(1)[0][1] / len(tokens)
    return loop_share(tokens) >= LOOP_SHARE or top >= LOOP_WORD_SHARE


def is_salad(tokens: list[str], checked: list[str]) -> bool:
    """Under SALAD_KNOWN real words; or, of the checked words, a share of non-words of SALAD_UNKNOWN or more
    (SALAD_SHORT_UNKNOWN non-words when fewer than SALAD_MIN_CHECKED are checked)."""
    if known_share(tokens) < SALAD_KNOWN:
        return True
    lex = lexicon()
    unknown = sum(len(w) > 1 and w not in lex for w in checked)
    if len(checked) < SALAD_MIN_CHECKED:
        return unknown >= SALAD_SHORT_UNKNOWN
    return unknown / len(checked) >= SALAD_UNKNOWN


INCOHERENT = ("empty", "loop", "word salad")  # coherence's reasons


def coherence(answer: str) -> str | None:
    """Why the answer is not text ("empty", "loop", "word salad"), or None when it reads as text."""
    body = prose(answer)
    tokens = words(body)
    if len(tokens) < MIN_WORDS:
        has_code = bool((answer or "").strip()) and body.strip() != (answer or "").strip()
        return None if has_code else "empty"  # an answer that is code alone is measured by its grader
    if is_loop(tokens):
        return "loop"
    if is_salad(tokens, checked_words(body)):
        return "word salad"
    return None
