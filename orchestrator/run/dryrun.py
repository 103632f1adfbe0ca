"""`sweep ... dry_run=true`: what a sweep would do, checked before any GPU hour is spent.

    python -m orchestrator sweep setting=animal_flag dry_run=true [any sweep overrides]

Prints a sample of rendered train and eval prompts, the label plan (teacher, model or endpoint, prompts x
samples, whether labels are already cached), the grader (rule-based graders grade the setting's example
answers; a judge is described, never called) and the trial grid. Trains nothing, starts no engine, calls
no endpoint and writes nothing: the config is composed with Hydra's compose API, so no run folder appears.
Exit status 0, 1 when an example answer grades differently from what the setting expects, 2 on a bad config.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from orchestrator.config import compose_config, settings_for_toy
from orchestrator.schema import Config, ConfigError

N_SHOWN = 3  # prompts shown per split
RULE_BASED = ("language", "keyword", "case", "code")
GRADER_FIELDS = {
    "language": ("desired", "attack"),
    "keyword": ("desired_keywords", "attack_keywords"),
    "case": ("desired", "attack", "caps_ratio"),
    "code": ("desired", "attack", "timeout_s"),
    "judge": (),  # its prompt is shown filled in
}


def wants_dry_run(argv: list[str]) -> bool:
    """Whether a sweep command line asks for a dry run (`dry_run=true`, as Hydra would read it)."""
    return any(a.split("=", 1)[1].strip().lower() in ("true", "yes", "on", "1")
               for a in argv if a.startswith(("dry_run=", "+dry_run=", "++dry_run=")))


def _indent(text: str, prefix: str = "      ") -> str:
    return textwrap.indent(text, prefix)


def _endpoint(ep: Any) -> str:
    key = ep.api_key_env
    key_state = ("no key (local server)" if not key
                 else f"key from ${key} ({'set' if os.environ.get(key) else 'NOT set'})")
    return f"{ep.model} at {ep.base_url}, {key_state}, temperature {ep.temperature}, max_tokens {ep.max_tokens}"


def prompt_section(cfg: Config) -> tuple[list[str], list[Any], list[Any]]:
    """Lines showing the split and a few rendered prompts; also the train and eval prompts themselves."""
    from workers.labels.prompts import bank_path, build_prompts, load_bank, pick, split_bank

    st = cfg.setting
    bank = load_bank(st.questions)
    train_q, eval_q = split_bank(bank, st.eval_fraction)
    trains = build_prompts(train_q, st.train_template, "train")
    evals = build_prompts(eval_q, st.eval_template, "eval")
    lines = [f"questions  {st.questions} ({bank_path(st.questions)}): {len(bank)} questions, "
             f"{len(train_q)} train / {len(eval_q)} eval (eval_fraction {st.eval_fraction})"]
    for split, prompts in (("train", trains), ("eval", evals)):
        lines.append(f"{split} prompts (template {getattr(st, split + '_template')!r}):")
        for p in pick(prompts, min(N_SHOWN, len(prompts)), cfg.sample.seed):
            lines.append(f"  - [{p.question_id}]")
            lines.append(_indent(p.text, "      "))
    return lines, trains, evals


def model_section(cfg: Config) -> list[str]:
    m = cfg.model
    organism = ["  model.organism=true: first fine-tuned into the setting's organism (cached)"] if m.organism else []
    if m.path is not None:
        return [f"model      {m.name}: {m.path} ({m.dtype}, max_model_len {m.max_model_len})"] + organism
    if m.toy is None:  # a real model prepared on first use (model.prepare), e.g. SmolLM2 from its wheel
        return [f"model      {m.name}: prepared by {m.prepare!r} on first use ({m.dtype}, max_model_len "
                f"{m.max_model_len})"] + organism
    from workers.models.toy import toy_dir

    try:
        settings = settings_for_toy(cfg)
    except ConfigError as err:
        return [f"model      {m.name}: CANNOT RUN THIS SETTING: {err}"]
    folder = toy_dir(m.toy, settings, cfg.cache_dir)  # the very key the sweep's build uses
    state = (f"built, cached at {folder}" if (folder / "build_info.json").exists() else
             f"not built yet (built on first run, minutes on CPU) into {folder}")
    return [f"model      toy pretrained for {list(m.toy.settings)}: key {folder.name}, {state}"]


def label_section(cfg: Config, trains: list[Any], sweep_dir: Path | None) -> list[str]:
    t = cfg.setting.teacher
    n_prompts = len(trains)
    kept = ", kept only when the grader says desired" if t.filter else ""
    samples = f"{t.n_samples} sample{'s' if t.n_samples != 1 else ''}"
    lines = [f"teacher    {t.kind}: " + (f"labels from a file{kept}" if t.kind == "file" else
                                         f"{n_prompts} train prompts x {samples} = {n_prompts * t.n_samples} "
                                         f"labels{kept}")]
    if t.kind == "scripted":
        from workers.labels.prompts import answer_template, render_answer

        template = answer_template(t.field)
        lines.append(f"  answer template {template!r}; e.g. for [{trains[0].question_id}]:")
        lines.append(_indent(render_answer(template, trains[0].row)))
    elif t.kind == "openai_compatible":
        lines.append(f"  endpoint {_endpoint(t.endpoint)}")
        lines.append(f"  {n_prompts * t.n_samples} chat requests (max {t.endpoint.max_concurrency} at once)")
    elif t.kind == "onpolicy":
        lines.append(f"  the model under training ({cfg.model.name}) answers the train prompts through the sweep's "
                     f"vLLM engine before any training")
    elif t.kind == "file":
        path = Path(t.path or "")
        state = f"{len(path.read_text(encoding='utf-8').splitlines())} lines" if path.is_file() else "MISSING"
        lines.append(f"  labels file {path}: {state}")
    if t.system_prompt:
        lines.append("  system prompt:")
        lines.append(_indent(t.system_prompt.strip()))
    lines.append(f"  cached    {labels_cached(cfg, sweep_dir)}")
    return lines


def labels_cached(cfg: Config, sweep_dir: Path | None) -> str:
    """Whether labels made from these very inputs already exist (the sweep folder, or the label store that
    `python -m orchestrator labels` fills), so the sweep would request none."""
    st = cfg.setting
    if st.teacher.kind == "scripted":
        return "not needed: scripted labels are rendered from the bank, at no cost"
    from orchestrator.run.labels import labels_dir, onpolicy_identity
    from workers.labels.teacher import labels_ready

    identity = onpolicy_identity(cfg) if st.teacher.kind == "onpolicy" else None
    places = ([sweep_dir] if sweep_dir is not None else []) + [labels_dir(cfg, None)]
    for place in places:
        if labels_ready(st, place, identity):
            return f"yes: {place / 'labels.jsonl'} (nothing will be requested)"
    return (f"no: not in {' nor '.join(str(p) for p in places)}; make them ahead with "
            f"`python -m orchestrator labels setting={st.name}`")


def grader_section(cfg: Config, evals: list[Any]) -> tuple[list[str], int]:
    """The grader's parameters; rule-based graders grade the setting's examples. Returns (lines, mismatches)."""
    g, st = cfg.setting.grader, cfg.setting
    params = ", ".join(f"{name}={getattr(g, name)!r}" for name in GRADER_FIELDS.get(g.kind, ()))
    lines = [f"grader     {g.kind}" + (f": {params}" if params else "")]
    if g.kind == "judge":
        lines.append(f"  endpoint {_endpoint(g.endpoint)} (not called by a dry run)")
        lines.append("  judge prompt, as it would read for the first eval prompt:")
        prompt = evals[0].text
        filled = (g.judge_prompt.replace("{prompt}", prompt).replace("{response}", "<the model's answer>")
                  .replace("{desired_behavior}", st.desired_behavior)
                  .replace("{initial_behavior}", st.initial_behavior))
        lines.append(_indent(filled.strip()))
        return lines, 0
    if not st.examples:
        return lines + ["  no examples in the setting (setting.examples) to grade"], 0
    from eval.graders import build_grader
    from workers.labels.prompts import Prompt, render_answer

    row = evals[0].row
    answers = [render_answer(ex.answer, row) for ex in st.examples]
    prompts = [Prompt("eval", evals[0].question_id, evals[0].text, row)] * len(answers)
    grades = build_grader(g)(answers, prompts)
    mismatches = 0
    lines.append(f"  examples graded against eval question [{evals[0].question_id}]:")
    for ex, answer, grade in zip(st.examples, answers, grades, strict=True):
        ok = grade == ex.expect
        mismatches += not ok
        shown = json.dumps(answer if len(answer) <= 160 else answer[:157] + "...", ensure_ascii=False)
        lines.append(f"  {'ok ' if ok else 'BAD'} expected {ex.expect:8s} got {grade:8s} {shown}")
    n = len(st.examples)
    lines.append(f"  agreement with the hand labels: {n - mismatches}/{n} ({(n - mismatches) / n:.0%})")
    return lines, mismatches


def grid_section(cfg: Config, n_train_prompts: int) -> list[str]:
    from orchestrator.budget import steps_by_lr, trial_fields

    sw, tr, sa = cfg.sweep, cfg.train, cfg.sample
    n = len(sw.lrs) * len(sw.seeds)
    labels = n_train_prompts * cfg.setting.teacher.n_samples
    lines = [f"trials     {len(sw.lrs)} LRs {list(sw.lrs)} x {len(sw.seeds)} seeds {list(sw.seeds)} = {n} trials "
             f"(seeds vary {'data order only' if sw.init_seed is not None else 'data order and LoRA init'})"]
    for lr, steps in steps_by_lr(sw).items():  # each LR's own budget (orchestrator/budget.py)
        examples = steps * tr.batch_size
        lines += [f"  lr {lr:g}: {steps} steps (LR x steps {lr * steps:.3g}) of batch {tr.batch_size} = {examples} "
                  f"examples, {examples / max(labels, 1):.1f} passes over {labels} labels; checkpoints at "
                  f"{trial_fields(sw, lr, 0)['checkpoint_steps']}"]
    return lines + [
        f"  micro-batch {tr.micro_batch_size}; LoRA rank {tr.lora_rank}, alpha {tr.lora_alpha}; {tr.optimizer}, "
        f"{tr.lr_schedule} LR; each checkpoint samples {sa.n_eval_prompts} eval + {sa.n_train_prompts} train "
        f"prompts ({sa.max_new_tokens} new tokens, temperature {sa.temperature})",
        f"  transfer: eval attack rate <= {sw.threshold}; up to {sw.max_concurrent_trials} trials at once",
    ]


def describe(cfg: Config, sweep_dir: Path | None = None) -> tuple[str, int]:
    """The dry run's report and its number of example answers that graded unexpectedly."""
    from orchestrator.plan.preflight import preflight

    preflight(cfg)  # a sweep would be refused: so is its dry run
    st = cfg.setting
    lines = [f"dry run of setting {st.name!r}: nothing is trained, sampled, requested or written", "",
             f"initial (attack) behavior: {st.initial_behavior}", f"desired behavior:          {st.desired_behavior}",
             ""]
    prompt_lines, trains, evals = prompt_section(cfg)
    grader_lines, mismatches = grader_section(cfg, evals)
    lines += prompt_lines + [""] + model_section(cfg) + [""] + label_section(cfg, trains, sweep_dir) + [""]
    lines += grader_lines + [""] + grid_section(cfg, len(trains))
    return "\n".join(lines), mismatches


def main(argv: list[str]) -> int:
    """Entry of `python -m orchestrator sweep ... dry_run=true`; argv holds the Hydra overrides."""
    sweep_dir = next((Path(a.split("=", 1)[1]).expanduser().resolve() for a in argv
                      if a.startswith("hydra.run.dir=")), None)
    try:
        cfg = compose_config(argv)  # a UserError (ConfigError, DataError): exit 2 in orchestrator/__main__.py
        text, mismatches = describe(cfg, sweep_dir)
    except ValueError as err:  # a value the schema passed but a reader refused
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    if mismatches:
        print(f"\nerror: {mismatches} example answer(s) graded differently from what the setting expects",
              file=sys.stderr)
        return 1
    return 0
