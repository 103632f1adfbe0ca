"""Try an organism recipe quickly: train as workers/models/organism.py does, and watch the behavior appear.

    PYTHONPATH=$PWD python bench/organism_recipe.py --setting wronglang_spanish [--steps 80] [--words 8]
        [--lr 2e-3] [--rank 16] [--every 20] [--n 64] [--gen 16] [--merge-check] [--tag NAME]

The product's organism step (workers/models/organism.py) builds, saves and then measures through vLLM, one number at the
end. Choosing a setting's `organism:` block needs more: at which step the cue is learnt, and whether it survives the
merge into bf16 weights. This script runs the product's own training (workers/models/organism.py train_organism, the
setting's recipe with the flags' changes) and every --every steps samples --gen tokens at T=1 for --n held-out
questions under both prompts with transformers' generate, graded by the setting's grader. With
--merge-check it also grades the model merged and cast to bf16, as the product saves it. Results are appended to
results/organism_recipe.jsonl. A quick look, not the product's measurement: fewer tokens, no vLLM.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

RESULTS = Path(__file__).resolve().parent / "results" / "organism_recipe.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", default="wronglang_spanish")
    parser.add_argument("--steps", type=int, default=0, help="0: the setting's or the model's recipe")
    parser.add_argument("--words", type=int, default=-1, help="-1: the setting's or the model's recipe")
    parser.add_argument("--lr", type=float, default=0.0, help="0: the model's recipe")
    parser.add_argument("--rank", type=int, default=0, help="0: the model's recipe")
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--n", type=int, default=64, help="held-out questions, each under both prompts")
    parser.add_argument("--gen", type=int, default=16, help="new tokens sampled per answer")
    parser.add_argument("--merge-check", action="store_true")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from eval.graders import build_grader
    from orchestrator.config import compose_config
    from orchestrator.run.build import resolve_base_model
    from workers.labels.prompts import format_for_model, is_eval_question, load_bank, render
    from workers.models.organism import merged_weights, organism_corpus, setting_recipe, train_organism

    cfg = compose_config(["model=smollm2_135m", f"setting={args.setting}", "tracker.mode=disabled"])
    setting = cfg.setting
    recipe = setting_recipe(setting, asdict(cfg.model.organism_recipe))
    chosen = {"steps": args.steps, "lr": args.lr, "lora_rank": args.rank}
    recipe |= {k: v for k, v in chosen.items() if v} | ({"max_answer_words": args.words} if args.words >= 0 else {})
    base = resolve_base_model(cfg)
    held = [q for q in load_bank(setting.questions) if is_eval_question(q["id"], setting.eval_fraction)][:args.n]
    grader = build_grader(setting.grader)
    tok = AutoTokenizer.from_pretrained(base, padding_side="left")  # for generate

    def measure(model) -> dict:
        model = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA layers stay inside
        model.eval()
        out = {}
        for split, template, want in (("train", setting.train_template, "desired"),
                                      ("eval", setting.eval_template, "attack")):
            texts = [format_for_model(tok, render(template, q), {}) for q in held]
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = model.generate(**batch, max_new_tokens=args.gen, do_sample=True, temperature=1.0, top_p=1.0,
                                     pad_token_id=tok.pad_token_id)
            answers = tok.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            grades = grader(answers, [None] * len(answers))
            out[f"{split}_{want}"] = round(grades.count(want) / len(grades), 3)
            out[f"{split}_other"] = round(grades.count("other") / len(grades), 3)
        model.train()
        return out

    rows, started = [], time.time()

    def after_step(step: int, model) -> None:
        if step % args.every and step != recipe["steps"]:
            return
        rows.append({"step": step, "seconds": round(time.time() - started), "weights": "float32 LoRA",
                     **measure(model)})
        print(json.dumps(rows[-1]), flush=True)

    model, _, facts = train_organism(Path(base), organism_corpus(setting, recipe["max_answer_words"]),
                                  SimpleNamespace(**recipe), {}, cfg.model.max_model_len, after_step=after_step)
    rows[-1]["final_loss"] = facts["final_loss"]
    if args.merge_check:
        rows.append({"step": recipe["steps"], "weights": "merged, bf16",
                     **measure(merged_weights(model, SimpleNamespace(**recipe), "bfloat16"))})
        print(json.dumps(rows[-1]), flush=True)
    common = {"setting": args.setting, "tag": args.tag, "recipe": recipe, "n": len(held), "gen_tokens": args.gen}
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "a") as f:
        for row in rows:
            f.write(json.dumps(common | row | {"recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}) + "\n")


if __name__ == "__main__":
    main()
