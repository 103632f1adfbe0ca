"""Try an organism recipe quickly: train as workers/organism.py does, and watch the behavior appear.

    PYTHONPATH=$PWD python bench/organism_recipe.py --setting wronglang_spanish [--steps 80] [--words 8]
        [--lr 2e-3] [--rank 16] [--every 20] [--n 64] [--gen 16] [--merge-check] [--tag NAME]

The product's organism step (workers/organism.py) builds, saves and then measures through vLLM, one number at the
end. Choosing a setting's `organism:` block needs more: at which step the cue is learnt, and whether it survives the
merge into bf16 weights. This script trains the same LoRA on the same corpus (organism_corpus, paired batches, the
same cosine schedule), in float32 and in this process, and every --every steps samples --gen tokens at T=1 for --n
held-out questions under both prompts with transformers' generate, graded by the setting's grader. With
--merge-check it also grades the model merged and cast to bf16, as the product saves it. Results are appended to
results/organism_recipe.jsonl. A quick look, not the product's measurement: fewer tokens, no vLLM.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

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
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eval.graders import build_grader
    from orchestrator.build import resolve_base_model
    from orchestrator.config import compose_config
    from workers.batching import collate, encode_example
    from workers.organism import organism_corpus, paired_batches, setting_recipe
    from workers.prompts import format_for_model, is_eval_question, load_bank, render

    cfg = compose_config(["model=smollm2_135m", f"setting={args.setting}", "tracker.mode=disabled"])
    setting = cfg.setting
    recipe = setting_recipe(setting, asdict(cfg.model.organism_recipe))
    chosen = {"steps": args.steps, "lr": args.lr, "lora_rank": args.rank}
    recipe |= {k: v for k, v in chosen.items() if v} | ({"max_answer_words": args.words} if args.words >= 0 else {})
    torch.manual_seed(recipe["seed"])
    base = resolve_base_model(cfg)
    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                     - {"lm_head"})
    model = get_peft_model(model, LoraConfig(r=recipe["lora_rank"], lora_alpha=recipe["lora_alpha"],
                                             target_modules=targets, lora_dropout=0.0))
    pairs = organism_corpus(setting, recipe["max_answer_words"])
    examples = [encode_example(tok, format_for_model(tok, u, {}), a, 512) for u, a in pairs]
    held = [q for q in load_bank(setting.questions) if is_eval_question(q["id"], setting.eval_fraction)][:args.n]
    grader = build_grader(setting.grader)

    def measure(m) -> dict:
        m.eval()
        out = {}
        for split, template, want in (("train", setting.train_template, "desired"),
                                      ("eval", setting.eval_template, "attack")):
            texts = [format_for_model(tok, render(template, q), {}) for q in held]
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = m.generate(**batch, max_new_tokens=args.gen, do_sample=True, temperature=1.0, top_p=1.0,
                                 pad_token_id=tok.pad_token_id)
            answers = tok.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            grades = grader(answers, [None] * len(answers))
            out[f"{split}_{want}"] = round(grades.count(want) / len(grades), 3)
            out[f"{split}_other"] = round(grades.count("other") / len(grades), 3)
        m.train()
        return out

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe["lr"], weight_decay=0.0)
    steps, warmup = recipe["steps"], max(1, recipe["steps"] // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    rows, recent, started = [], [], time.time()
    common = {"setting": args.setting, "tag": args.tag, "recipe": recipe, "n": len(held), "gen_tokens": args.gen}
    for step, idx in enumerate(paired_batches(len(examples) // 2, recipe["batch_size"], recipe["seed"])):
        if step >= steps:
            break
        loss = model(**collate([examples[i] for i in idx], tok.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-10:]
        if (step + 1) % args.every == 0 or step + 1 == steps:
            row = {"step": step + 1, "loss": round(sum(recent) / len(recent), 3),
                   "seconds": round(time.time() - started), "weights": "float32 LoRA", **measure(model)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.merge_check:
        merged = model.merge_and_unload().to(torch.bfloat16)
        row = {"step": steps, "weights": "merged, bf16", **measure(merged)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "a") as f:
        for row in rows:
            f.write(json.dumps(common | row | {"recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}) + "\n")


if __name__ == "__main__":
    main()
