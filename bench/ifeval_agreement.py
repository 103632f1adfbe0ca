"""How often do lrsweep's IFEval verdicts equal the official scorer's? Pair by pair, on the official data.

    PYTHONPATH=$PWD python bench/ifeval_agreement.py --input IFEVAL/data/input_data.jsonl \
        --official OUT/eval_results_strict.jsonl [--official-loose OUT/eval_results_loose.jsonl] [--tag gpt4]

--input is the benchmark's input_data.jsonl (541 prompts with their kwargs); --official is what the official scorer
(google-research's instruction_following_eval, evaluation_main.py) wrote for a set of responses: one line per
prompt with the prompt, the response and its verdict per instruction. lrsweep's eval.capability.ifeval judges the same
responses; the script prints the share of (prompt, instruction) pairs whose verdicts agree, prompt-level accuracy
of both and its difference, the disagreements by instruction, and the credit lrsweep gives to empty answers on the
same prompts (the official scorer gives none). docs/capability_scoring.md says where to get the files and how the
official verdicts were made. Writes results/ifeval_agreement.json (one entry per --tag, merged) and a .txt copy of
what it printed.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.capability import ifeval
from eval.degenerate import degenerate

RESULTS = Path(__file__).resolve().parent / "results" / "ifeval_agreement"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def pair_rows(inputs: Sequence[dict[str, Any]], official: Sequence[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Input rows with the official output rows, by line (the official scorer writes them in input order)."""
    if len(inputs) != len(official):
        raise ValueError(f"{len(inputs)} input prompts but {len(official)} official result lines: pass the "
                         "eval_results_*.jsonl the official scorer wrote for this input_data.jsonl")
    for i, (a, b) in enumerate(zip(inputs, official, strict=True)):
        if a["instruction_id_list"] != b["instruction_id_list"]:
            raise ValueError(f"line {i + 1}: the input and the official results list different instructions")
    return list(zip(inputs, official, strict=True))


def compare(pairs: Sequence[tuple[dict, dict]], loose: bool) -> dict[str, Any]:
    """Pair-level agreement, prompt-level accuracy of both scorers, and the disagreements by instruction. lrsweep
    judges as eval.capability.scoring.score does: a degenerate response (blank, a loop) as an empty one."""
    judge = ifeval.follows_loose if loose else ifeval.follows
    ours_all, theirs_all, diffs, n_degenerate = [], [], [], 0
    for inp, off in pairs:
        why = degenerate(off["response"])
        n_degenerate += why is not None
        ours = judge("" if why else off["response"], inp["instruction_id_list"], inp["kwargs"])
        theirs = [bool(v) for v in off["follow_instruction_list"]]
        ours_all.append(ours)
        theirs_all.append(theirs)
        for iid, o, t in zip(inp["instruction_id_list"], ours, theirs, strict=True):
            if o != t:
                diffs.append({"key": inp["key"], "instruction": iid, "official": t, "lrsweep": o})
    n_pairs = sum(len(v) for v in ours_all)
    ours_prompt = sum(all(v) for v in ours_all) / len(pairs)
    theirs_prompt = sum(all(v) for v in theirs_all) / len(pairs)
    return {
        "pairs": n_pairs, "pairs_agree": n_pairs - len(diffs), "pair_agreement": (n_pairs - len(diffs)) / n_pairs,
        "prompts": len(pairs), "prompt_accuracy_lrsweep": ours_prompt, "prompt_accuracy_official": theirs_prompt,
        "prompt_accuracy_difference_points": 100 * (ours_prompt - theirs_prompt),
        "instruction_accuracy_lrsweep": sum(map(sum, ours_all)) / n_pairs,
        "instruction_accuracy_official": sum(map(sum, theirs_all)) / n_pairs,
        "lenient_disagreements": sum(d["lrsweep"] for d in diffs), "degenerate_responses": n_degenerate,
        "by_instruction": dict(Counter(d["instruction"] for d in diffs).most_common()), "disagreements": diffs,
    }


def empty_credit(inputs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """lrsweep's strict credit when every response is empty (the official scorer's is 0 by construction)."""
    verdicts = [ifeval.follows("", r["instruction_id_list"], r["kwargs"]) for r in inputs]
    return {"prompt_accuracy": sum(all(v) for v in verdicts) / len(verdicts),
            "instruction_accuracy": sum(map(sum, verdicts)) / sum(map(len, verdicts))}


def report(tag: str, result: dict[str, Any]) -> str:
    lines = [f"[{tag}]"]
    for variant in ("strict", "loose"):
        r = result.get(variant)
        if r is None:
            continue
        lines += [f"{variant}: {r['pairs_agree']}/{r['pairs']} pairs agree ({100 * r['pair_agreement']:.2f}%); "
                  f"prompt-level {100 * r['prompt_accuracy_lrsweep']:.2f} (lrsweep) vs "
                  f"{100 * r['prompt_accuracy_official']:.2f} (official): "
                  f"{r['prompt_accuracy_difference_points']:+.2f} points; instruction-level "
                  f"{100 * r['instruction_accuracy_lrsweep']:.2f} vs {100 * r['instruction_accuracy_official']:.2f}",
                  f"  disagreements by instruction: {r['by_instruction']} "
                  f"({r['lenient_disagreements']} where lrsweep passes and the official fails); "
                  f"{r['degenerate_responses']} responses degenerate (blank or a loop) to lrsweep"]
        lines += [f"    {d['key']} {d['instruction']}: official {d['official']}, lrsweep {d['lrsweep']}"
                  for d in r["disagreements"]]
    e = result["empty_responses"]
    lines.append(f"empty responses, lrsweep strict credit: prompt-level {100 * e['prompt_accuracy']:.1f}%, "
                 f"instruction-level {100 * e['instruction_accuracy']:.1f}% (official: 0)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="the benchmark's input_data.jsonl")
    ap.add_argument("--official", required=True, help="the official scorer's eval_results_strict.jsonl")
    ap.add_argument("--official-loose", help="the official scorer's eval_results_loose.jsonl (optional)")
    ap.add_argument("--tag", default="gpt4", help="the entry's name in the results file")
    ap.add_argument("--out", default=str(RESULTS), help="results path without suffix (.json and .txt written)")
    ap.add_argument("--source", default="", help="where the files came from, recorded with the figures")
    args = ap.parse_args()
    inputs = read_jsonl(args.input)
    result: dict[str, Any] = {"source": args.source, "input": Path(args.input).name,
                              "official": Path(args.official).name,
                              "strict": compare(pair_rows(inputs, read_jsonl(args.official)), loose=False)}
    if args.official_loose:
        result["loose"] = compare(pair_rows(inputs, read_jsonl(args.official_loose)), loose=True)
    result["empty_responses"] = empty_credit(inputs)
    text = report(args.tag, result)
    print(text)
    out = Path(args.out)
    merged = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    merged[args.tag] = result
    out.with_suffix(".json").write_text(json.dumps(merged, indent=1) + "\n")
    texts = {k: report(k, v) for k, v in merged.items()}
    out.with_suffix(".txt").write_text("\n\n".join(texts.values()) + "\n")


if __name__ == "__main__":
    main()
