"""The embedded model organism: a tiny Qwen3ForCausalLM that lrsweep pretrains on CPU.

The toy is taught, for each setting it lists, to follow that setting's instruction: on wronglang
it answers in Spanish when the flag asks for Spanish and in English when it asks for English; on
animal_flag it names elephants or cats as the flag says; on allcaps_refusal it shouts when asked. Its
corpus is the project's question bank; its tokenizer is trained locally. Deterministic in its
config and seed, built once and cached under `<cache_dir>/toy/<key>`; a half-built folder is
never read (build in a temporary folder, then rename).

Build it alone:  python -m orchestrator toy   (conf/ defaults; Hydra overrides follow)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.knobs import AT_LEAST_1, NON_NEGATIVE, POSITIVE, knob
from eval.runfiles import ensure_built, publish_dir
from workers.capability import toy_corpus_digest, toy_corpus_pairs
from workers.labels.prompts import answer_fields, bank_path, file_digest, load_bank, render, render_answer


@dataclass
class ToyModelConfig:
    # settings whose initial behavior the toy is pretrained to follow (their `toy:` blocks)
    settings: list[str] = field(default_factory=lambda: ["wronglang_spanish", "animal_flag", "allcaps_refusal"])
    vocab_size: int = knob(4096, within=AT_LEAST_1)
    hidden_size: int = knob(128, within=AT_LEAST_1)
    intermediate_size: int = knob(384, within=AT_LEAST_1)
    num_layers: int = knob(2, within=AT_LEAST_1)
    num_heads: int = knob(2, within=AT_LEAST_1)
    head_dim: int = knob(64, within=AT_LEAST_1)
    seq_len: int = knob(128, within=AT_LEAST_1)
    steps: int = knob(1200, within=AT_LEAST_1)
    batch_size: int = knob(32, within=AT_LEAST_1)
    lr: float = knob(3e-3, within=POSITIVE)
    seed: int = knob(0, within=NON_NEGATIVE)
    capability_probe: bool = False  # also teach the capability probe's skill (capability=toy turns it on)


TOY_FORMAT_VERSION = 2  # bump when the corpus or the build recipe changes meaning
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class ToySkill:
    """One setting's instruction as the toy must follow it: the prompts, and answer templates over bank fields."""

    name: str
    questions: str
    train_template: str
    eval_template: str
    train_answer: str  # e.g. "{es}", "Elephants love this one. {en}", "{en}"
    eval_answer: str  # e.g. "{en}", "Cats love this one. {en}", "{en:upper}"

    def behavior(self) -> tuple[str, ...]:
        """Everything but the name: two settings with equal behavior share one pretrained skill."""
        return (self.questions, self.train_template, self.eval_template, self.train_answer, self.eval_answer)


def skill_from_setting(setting: Any, answers: Any = None) -> ToySkill:
    """The setting's prompts with the answers of its `toy:` block, or of `answers` (a block with train_answer and
    eval_answer, e.g. the setting's `organism:` block) when given."""
    answers = answers if answers is not None else setting.toy
    if answers is None:
        raise ValueError(f"setting {setting.name!r} has no `toy:` block, so model=toy cannot be pretrained for it")
    return ToySkill(
        name=setting.name,
        questions=setting.questions,
        train_template=setting.train_template,
        eval_template=setting.eval_template,
        train_answer=answers.train_answer,
        eval_answer=answers.eval_answer,
    )


def same_skill(a: Any, b: Any) -> bool:
    """Whether two settings (with `toy:` blocks) teach the toy the same behavior, whatever their names."""
    return skill_from_setting(a).behavior() == skill_from_setting(b).behavior()


def toy_key(toy_cfg: dict[str, Any], skills: list[ToySkill]) -> str:
    """Cache key: the toy's knobs, each skill's behavior (not its name), and the bytes of each bank used."""
    payload = {
        "version": TOY_FORMAT_VERSION,
        "toy": {k: v for k, v in toy_cfg.items() if k != "settings"},
        "skills": sorted({s.behavior() for s in skills}),
        "banks": {s.questions: file_digest(bank_path(s.questions)) for s in skills},
    }
    if toy_cfg.get("capability_probe"):
        payload["capability_probe"] = toy_corpus_digest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_corpus(skills: list[ToySkill], probe: bool = False,
                 keep: Callable[[dict[str, Any]], bool] | None = None) -> list[tuple[str, str]]:
    """(user text, answer) pairs: every question of every bank (or those `keep` accepts) under both of the
    setting's prompts."""
    pairs = []
    for skill in skills:
        fields = answer_fields(skill.train_answer) + answer_fields(skill.eval_answer)
        for q in load_bank(skill.questions, required=("id", "question", *dict.fromkeys(fields))):
            if keep is not None and not keep(q):
                continue
            pairs.append((render(skill.train_template, q), render_answer(skill.train_answer, q)))
            pairs.append((render(skill.eval_template, q), render_answer(skill.eval_answer, q)))
    return pairs + (toy_corpus_pairs() if probe else [])  # the capability probe's skill (workers.capability)


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=4096
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def pretrain(toy: Any, tokenizer: Any, pairs: list[tuple[str, str]], log: Any = print) -> tuple[Any, float]:
    """Plain AdamW with cosine decay; loss on answers only. Returns (model, final mean loss)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from workers.labels.prompts import format_for_model
    from workers.train.batching import batch_indices, collate, encode_example

    torch.manual_seed(toy.seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=toy.hidden_size,
        intermediate_size=toy.intermediate_size,
        num_hidden_layers=toy.num_layers,
        num_attention_heads=toy.num_heads,
        num_key_value_heads=toy.num_heads,
        head_dim=toy.head_dim,
        max_position_embeddings=max(toy.seq_len, 512),
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    examples = [encode_example(tokenizer, format_for_model(tokenizer, u), a, toy.seq_len) for u, a in pairs]
    opt = torch.optim.AdamW(model.parameters(), lr=toy.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * s / toy.steps))
    )
    model.train()
    recent: list[float] = []
    started = time.time()
    for step, idx in enumerate(batch_indices(len(examples), toy.batch_size, toy.seed)):
        if step >= toy.steps:
            break
        batch = collate([examples[i] for i in idx], tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-20:]
        if step % 100 == 0 or step == toy.steps - 1:
            mean = sum(recent) / len(recent)
            log(f"[toy] step {step + 1}/{toy.steps} loss {mean:.3f} ({time.time() - started:.0f}s)")
    model.eval()
    return model, sum(recent) / len(recent)


def toy_build_key(toy: Any, settings: list[Any]) -> tuple[str, dict[str, Any], list[ToySkill]]:
    """(cache key, plain toy config, skills) of the toy for `toy` (a ToyConfig or DictConfig) and these settings:
    the one key function that both the build (ensure_toy) and the dry run use."""
    skills = [skill_from_setting(s) for s in settings]
    toy_cfg = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in _plain(toy).items()}
    if not toy_cfg.get("capability_probe"):
        toy_cfg.pop("capability_probe", None)  # the default toy keeps the cache key it had before the probe existed
    return toy_key(toy_cfg, skills), toy_cfg, skills


def toy_dir(toy: Any, settings: list[Any], cache_dir: str | os.PathLike) -> Path:
    """Where the toy for these settings is (or will be) cached; built when it holds build_info.json."""
    return Path(cache_dir).expanduser().resolve() / "toy" / toy_build_key(toy, settings)[0]


def ensure_toy(toy: Any, settings: list[Any], cache_dir: str | os.PathLike, log: Any = print) -> Path:
    """Path of the cached toy model folder, building it first when absent."""
    key, toy_cfg, skills = toy_build_key(toy, settings)
    final = Path(cache_dir).expanduser().resolve() / "toy" / key
    return ensure_built(final, "build_info.json", lambda: _build_toy(toy, toy_cfg, skills, key, final, log), log)


def _build_toy(toy: Any, toy_cfg: dict[str, Any], skills: list[ToySkill], key: str, final: Path, log: Any) -> None:
    log(f"[toy] building the toy model organism (key {key}); cached for later runs at {final}")
    started = time.time()
    pairs = build_corpus(skills, bool(toy_cfg.get("capability_probe")))
    tokenizer = train_tokenizer([u + " " + a for u, a in pairs], toy.vocab_size)
    model, loss = pretrain(toy, tokenizer, pairs, log)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"key": key, "config": toy_cfg, "skills": [asdict(s) for s in skills], "final_loss": loss,
                "corpus_pairs": len(pairs), "build_seconds": round(time.time() - started, 1)}
        (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
        publish_dir(tmp, final, "build_info.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[toy] built in {time.time() - started:.0f}s, final answer loss {loss:.3f}")


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass or DictConfig as a plain dict."""
    if hasattr(obj, "__dataclass_fields__") and not hasattr(obj, "_metadata"):
        return asdict(obj)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(obj, resolve=True)  # type: ignore[return-value]
