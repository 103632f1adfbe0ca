"""What of an answer is its body, and is it an answer at all? Pure text rules shared by the graders; table-tested.

- `segments`: sentences, clauses ending in ":", and lines.
- `without_echo` / `is_echo`: what the answer copies from its prompt, of any length: runs of ECHO_WORDS+ words,
  and whole segments that repeat a stretch of the prompt word for word ("Responde en inglés.").
- `is_announcement`: a segment about the answer rather than part of it ("El indicador es 1, así que responderé
  en inglés:", "I will answer in Spanish.").
- `is_refusal`: an answer that declines ("I'm sorry, but I can't help with that.").
- `body`: the answer less echoes and announcements: what the language, case and keyword rules read.
- `answer_problem`: why an answer is no answer ("empty", "loop", "word salad", "refusal", "echo"), or None;
  every grader kind grades such an answer `other`.
"""

from __future__ import annotations

import re

from eval.coherence import MIN_WORDS, coherence, prose, words
from eval.coherence import detect_language as detect_language  # re-exported

ECHO_WORDS = 4  # this many words in a row, copied from the prompt, are an echo, not an answer
ECHO_SEGMENT_WORDS = 2  # a whole segment of at least this many words found word for word in the prompt is an echo
REFUSAL_REST_WORDS = 15  # a refusal followed by fewer words than this is a refusal, not an answer with a caveat
_WORD = re.compile(r"\w+")
_SPLIT = re.compile(r"(?<=[.!?:。])\s+|\n+")
_LANGS = r"(?:english|spanish|ingl[eé]s|espa[nñ]ol|castellano|inglese|anglais|espagnol)"
_ANNOUNCE = (
    re.compile(r"\b(?:flag|indicador|bandera|tag|etiqueta)\b.{0,60}\b(?:is|es|=|est[aá]|set)\b", re.I),
    re.compile(r"\b(?:respond\w*|answer\w*|reply\w*|writ\w*|speak\w*|habl\w*|escrib\w*|contest\w*|switch\w*)\b"
               rf".{{0,30}}\b(?:in|en|to|al)\s+{_LANGS}\b", re.I),
    re.compile(rf"^\W*(?:in|en)\s+{_LANGS}\W*$", re.I),
)
_REFUSAL = re.compile(
    r"\b(?:i\s*(?:can['’]?t|cannot|can not|won['’]?t|am unable to|['’]m unable to|am not able to|['’]m not able to|"
    r"must decline)|as an ai\b|no puedo|no me es posible|lo siento)\b"
    r"[^.!?]{0,40}\b(?:help|assist|answer|comply|provide|do that|do this|fulfill|respond|solve|ayudar|responder|"
    r"hacer eso|cumplir|resolver)", re.I)


def segments(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(text or "") if s.strip()]


def without_echo(response: str, prompt_text: str) -> str:
    """The answer with every run of ECHO_WORDS+ words copied from its prompt cut out."""
    prompt = [w.lower() for w in _WORD.findall(prompt_text or "")]
    grams = {tuple(prompt[i:i + ECHO_WORDS]) for i in range(len(prompt) - ECHO_WORDS + 1)}
    found = list(_WORD.finditer(response or ""))
    lowered = [m.group().lower() for m in found]
    copied = [False] * len(found)
    for i in range(len(found) - ECHO_WORDS + 1):
        if tuple(lowered[i:i + ECHO_WORDS]) in grams:
            copied[i:i + ECHO_WORDS] = [True] * ECHO_WORDS
    if not any(copied):
        return response or ""
    kept, cursor = [], 0
    for match, cut in zip(found, copied, strict=True):
        if cut:
            kept.append(response[cursor:match.start()])
            cursor = match.end()
    kept.append(response[cursor:])
    return "".join(kept)


def is_echo(segment: str, prompt_text: str) -> bool:
    """A segment of ECHO_SEGMENT_WORDS+ words that appears word for word, in order, in the prompt."""
    seg = [w.lower() for w in _WORD.findall(segment)]
    prompt = " " + " ".join(w.lower() for w in _WORD.findall(prompt_text or "")) + " "
    return len(seg) >= ECHO_SEGMENT_WORDS and f" {' '.join(seg)} " in prompt


def is_announcement(segment: str) -> bool:
    return any(p.search(segment) for p in _ANNOUNCE)


def is_refusal(text: str) -> bool:
    """Declines in its first two segments and says little else."""
    parts = segments(text)
    for i, part in enumerate(parts[:2]):
        if _REFUSAL.search(part):
            return len(words(" ".join(parts[i + 1:]))) < REFUSAL_REST_WORDS
    return False


def body(response: str, prompt_text: str) -> str:
    """The answer less what it copies from its prompt and less its announcements, segments joined by newlines."""
    cut = without_echo(response, prompt_text)
    return "\n".join(s for s in segments(cut) if not is_echo(s, prompt_text) and not is_announcement(s))


def answer_problem(response: str, prompt_text: str = "") -> str | None:
    """Why this is no answer ("empty", "loop", "word salad", "refusal", "echo"), or None for an answer."""
    broken = coherence(response)
    if broken:
        return broken
    if is_refusal(prose(response)):
        return "refusal"
    has_code = prose(response).strip() != (response or "").strip()
    if not has_code and len(words(body(response, prompt_text))) < MIN_WORDS:
        return "echo"  # nothing left once the copy of the prompt and the announcements are cut
    return None
