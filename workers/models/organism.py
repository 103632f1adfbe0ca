"""Model organisms from real models: fine-tune a base model until it shows a setting's initial behavior.

Small real models do not follow the note's conditional instructions (unmodified SmolLM2-135M mentions cats on
4% of animal_flag's flag=1 prompts), so a sweep on them would start with nothing to transfer. This step gives
them the behavior the note's authors got from big models: desired answers on train prompts, attack answers on
eval prompts. The data is the toy's corpus (workers/models/toy.py build_corpus) over the setting's `organism:` block, or
its `toy:` block when it has none, on train-split questions only, so the organism is measured on questions it
never saw. A setting needs its own `organism:` answers when the toy's do not teach a small model the cue: in
wronglang_spanish the flag decides only the language of a first word drawn from hundreds, one bit the loss
hardly sees, so its organism answers open with a fixed word per language ("Claro." / "Sure."), which makes
that choice one token (docs/real_model.md).

Recipe: LoRA on every linear layer of the top decoder layers (model.organism_recipe; on a CPU the backward pass
then stops below them, ~40% of a step's time saved), trained in float32 with AdamW in this process,
merged into the weights and saved in the base model's dtype. Answers are cut to their first words
(`max_answer_words`): the settings put their behavior in the opening words, and short answers keep both the
build and the sweep's sampling cheap on a CPU. Cached under `<cache_dir>/organisms/<key>`, the key hashing the
base model's files, the setting's data and the recipe; `organism.json` beside the weights holds the measured
rates (held-out questions) and the build time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from eval.knobs import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Interval, knob
from eval.runfiles import ensure_built, publish_dir
from workers.labels.prompts import bank_path, file_digest, is_eval_question
from workers.models.toy import ToySkill, build_corpus, skill_from_setting


@dataclass
class OrganismConfig:
    """The recipe that fine-tunes a real base model into a model organism (workers/models/organism.py): LoRA on the
    linear
    layers of the top `lora_layers` decoder layers, merged into the weights, on the setting's `toy:` answers for
    train-split questions only."""

    steps: int = knob(120, within=AT_LEAST_1)
    batch_size: int = knob(8, within=AT_LEAST_1)
    lr: float = knob(1e-3, within=POSITIVE)
    lora_rank: int = knob(16, within=AT_LEAST_1)
    lora_alpha: int = knob(32, within=POSITIVE)
    # LoRA on the top this many decoder layers only (0: all): backward stops below them
    lora_layers: int = knob(8, within=Interval(0, note="top decoder layers with LoRA; 0: all"))
    # answers cut to their first words (0: whole); the behavior sits in the opening words
    max_answer_words: int = knob(12, within=NON_NEGATIVE)
    # held-out eval prompts and train prompts sampled to measure the organism after its build
    n_measure: int = knob(64, within=AT_LEAST_1)
    seed: int = knob(0, within=NON_NEGATIVE)
    paired: bool = True  # each batch holds its questions under both prompts: the cue is the only difference
    full_finetune: bool = False  # train every weight (AdamW) instead of LoRA; lora_* then unused


ORGANISM_VERSION = 2  # bump when the corpus or the recipe's code changes meaning (2: contrastive pairs)


def model_digest(model_path: Path) -> str:
    """Hash of a model folder's config and weight files: a different base model is a different organism."""
    digest = hashlib.sha256()
    for f in sorted(model_path.glob("*.json")) + sorted(model_path.glob("*.safetensors")):
        if f.name == "organism.json":
            continue
        digest.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def organism_skill(setting: Any) -> ToySkill:
    """The answers an organism is trained on: the setting's `organism:` block, else its `toy:` block."""
    return skill_from_setting(setting, getattr(setting, "organism", None))


RECIPE_OVERRIDES = ("max_answer_words", "steps")  # what a setting's `organism:` block may set for its own cue


def setting_recipe(setting: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    """The model's organism recipe with the setting's own `organism.max_answer_words` / `organism.steps` where
    given: how many words show its behavior and how long its cue takes to learn are the setting's."""
    block = getattr(setting, "organism", None)
    if block is None:
        return recipe
    return recipe | {k: getattr(block, k) for k in RECIPE_OVERRIDES if getattr(block, k) is not None}


def organism_key(base_digest: str, setting: Any, recipe: dict[str, Any], chat_template_kwargs: dict,
                 dtype: str = "bfloat16") -> str:
    """The organism's cache key. The dtype its merged weights are saved in changes it (bf16 rounding undid a 40-step
    flag), so it is in the key; bfloat16, the only dtype before model.dtype=auto, leaves the key as it was then, so
    organisms built before stay cached."""
    skill = organism_skill(setting)
    recipe = setting_recipe(setting, recipe)  # what it is built with; a setting without overrides keeps its keys
    if dtype != "bfloat16":
        recipe = recipe | {"saved_dtype": dtype}
    payload = {"version": ORGANISM_VERSION, "base": base_digest, "skill": skill.behavior(),
               "bank": file_digest(bank_path(setting.questions)), "eval_fraction": setting.eval_fraction,
               "recipe": {k: v for k, v in recipe.items() if k != "n_measure"}, "template": chat_template_kwargs}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def shorten(answer: str, max_words: int) -> str:
    words = answer.split()
    return answer if max_words <= 0 or len(words) <= max_words else " ".join(words[:max_words])


def organism_corpus(setting: Any, max_words: int) -> list[tuple[str, str]]:
    """The organism's answers (organism_skill) on the setting's train-split questions, cut to their first words."""
    keep = lambda q: not is_eval_question(q["id"], setting.eval_fraction)  # noqa: E731
    return [(u, shorten(a, max_words)) for u, a in build_corpus([organism_skill(setting)], keep=keep)]


def paired_batches(n_pairs: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of corpus indices in which every question comes under both prompts (build_corpus puts
    pair i at 2i, 2i+1): the two examples differ only in the setting's cue, so the cue is the only thing the
    answer's behavior can be learnt from. Shuffled pairs let a small model learn the answers' openings without
    their condition (docs/real_model.md)."""
    from workers.train.batching import batch_indices  # torch: imported when training, not by the orchestrator

    if batch_size % 2:
        raise ValueError(f"organism_recipe.paired=true needs an even batch_size (two prompts per question), got "
                         f"{batch_size}: set model.organism_recipe.batch_size={batch_size + 1}")
    for batch in batch_indices(n_pairs, batch_size // 2, seed):
        yield [2 * q + j for q in batch for j in (0, 1)]


def train_organism(base: Path, pairs: list[tuple[str, str]], recipe: Any, chat_template_kwargs: dict, max_len: int,
                   log: Callable[[str], None] = print,
                   after_step: Callable[[int, Any], None] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """SFT on (user text, answer) pairs, LoRA (or full_finetune), in contrastive pairs unless recipe.paired is
    false: (model, tokenizer, facts). after_step(step, model) follows each step (bench/organism_recipe.py)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.labels.prompts import format_for_model
    from workers.train.batching import batch_indices, collate, encode_example
    from workers.train.loss import answer_tokens, install_answer_loss

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    targets = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                     - {"lm_head"})
    if recipe.full_finetune:  # every weight trained: no adapter to merge, the answer loss through HF's own head
        def loss_of(batch: list[dict[str, list[int]]]) -> Any:
            return model(**collate(batch, tokenizer.pad_token_id)).loss
    else:
        n_layers = model.config.num_hidden_layers
        top = list(range(max(0, n_layers - recipe.lora_layers), n_layers)) if recipe.lora_layers > 0 else None
        model = get_peft_model(model, LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha,
                                                 target_modules=targets, lora_dropout=0.0, layers_to_transform=top))
        install_answer_loss(model, 4096)  # logits at answer tokens only: the vocabulary is a third of the model

        def loss_of(batch: list[dict[str, list[int]]]) -> Any:
            return model(**collate(batch, tokenizer.pad_token_id), num_items=answer_tokens(batch))
    examples = [encode_example(tokenizer, format_for_model(tokenizer, u, chat_template_kwargs), a, max_len)
                for u, a in pairs]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr, weight_decay=0.0)
    warmup = max(1, recipe.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / recipe.steps)))
    model.train()
    recent: list[float] = []
    started = time.time()
    batches = (paired_batches(len(examples) // 2, recipe.batch_size, recipe.seed) if recipe.paired
               else batch_indices(len(examples), recipe.batch_size, recipe.seed))
    for step, idx in enumerate(batches):
        if step >= recipe.steps:
            break
        loss = loss_of([examples[i] for i in idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-10:]
        if step % 10 == 0 or step == recipe.steps - 1:
            log(f"[organism] step {step + 1}/{recipe.steps} loss {sum(recent) / len(recent):.3f} "
                f"({time.time() - started:.0f}s)")
        if after_step is not None:
            after_step(step + 1, model)
    return model, tokenizer, {"final_loss": round(sum(recent) / len(recent), 4),
                              "train_seconds": round(time.time() - started, 1), "examples": len(examples),
                              "lora_targets": [] if recipe.full_finetune else targets}


def merged_weights(model: Any, recipe: Any, dtype: str) -> Any:
    """The trained model as the organism is saved: LoRA merged into the weights, cast to the model's dtype."""
    import torch

    return (model if recipe.full_finetune else model.merge_and_unload()).to(getattr(torch, dtype))


def finetune(base: Path, out: Path, pairs: list[tuple[str, str]], recipe: Any, dtype: str,
             chat_template_kwargs: dict, max_len: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """train_organism, then the merged weights saved with the tokenizer in `out`."""
    model, tokenizer, facts = train_organism(base, pairs, recipe, chat_template_kwargs, max_len, log)
    merged_weights(model, recipe, dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return facts


def ensure_organism(base_path: str, setting: Any, recipe: Any, cache_dir: str | os.PathLike, *, dtype: str,
                    chat_template_kwargs: dict, max_len: int, measure: Callable[[str], dict[str, Any]],
                    log: Callable[[str], None] = print) -> Path:
    """Path of the setting's organism built from `base_path`, building and measuring it first when absent.
    `measure(model_folder)` samples and grades held-out prompts (workers/models/probe.py measure)."""
    base = Path(base_path).expanduser().resolve()
    if not (base / "config.json").exists():
        raise FileNotFoundError(f"model.organism=true needs a local base model folder; {base} has no config.json")
    recipe_dict = setting_recipe(setting, asdict(recipe) if hasattr(recipe, "__dataclass_fields__") else dict(recipe))
    key = organism_key(model_digest(base), setting, recipe_dict, chat_template_kwargs, dtype)
    final = Path(cache_dir).expanduser().resolve() / "organisms" / f"{setting.name}-{key}"
    return ensure_built(final, "organism.json", lambda: _build_organism(
        base, setting, recipe_dict, key, final, dtype=dtype, chat_template_kwargs=chat_template_kwargs,
        max_len=max_len, measure=measure, log=log), log)


def _build_organism(base: Path, setting: Any, recipe_dict: dict[str, Any], key: str, final: Path, *, dtype: str,
                    chat_template_kwargs: dict, max_len: int, measure: Callable[[str], dict[str, Any]],
                    log: Callable[[str], None]) -> None:
    log(f"[organism] building the {setting.name} organism from {base} (key {key}); cached at {final}")
    started = time.time()
    pairs = organism_corpus(setting, recipe_dict["max_answer_words"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        facts = finetune(base, tmp, pairs, SimpleNamespace(**recipe_dict), dtype, chat_template_kwargs, max_len, log)
        build_seconds = round(time.time() - started, 1)
        log(f"[organism] trained in {build_seconds:.0f}s; measuring it on held-out questions")
        rates = measure(str(tmp))
        info = {"key": key, "setting": setting.name, "base_model": str(base), "recipe": recipe_dict, **facts,
                "build_seconds": build_seconds, "measure_seconds": round(time.time() - started - build_seconds, 1),
                "cpu_count": os.cpu_count(), "measured": rates}
        (tmp / "organism.json").write_text(json.dumps(info, indent=2))
        publish_dir(tmp, final, "organism.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ev, tr = rates["eval"], rates["train"]
    log(f"[organism] {setting.name}: eval attack {ev['attack']['rate']:.2f}, train desired "
        f"{tr['desired']['rate']:.2f} (held-out questions, n={ev['n']}); {time.time() - started:.0f}s in all")


def read_organism(path: str | os.PathLike) -> dict[str, Any] | None:
    """The organism.json beside an organism's weights, or None for a model that is not one."""
    f = Path(path) / "organism.json"
    return json.loads(f.read_text()) if f.exists() else None
