"""The sweep: build the model organism, label, start Ray and one vLLM engine, run every trial, summarise.

    python -m orchestrator sweep setting=wronglang_spanish ['sweep.lrs=[1e-4,1e-3]' 'sweep.seeds=[0,1]' ...]
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from eval.analysis import TrialAnalysis
from eval.plots import plot_curves
from eval.report import write_report
from eval.runfiles import (
    SweepDir,
    TrialDir,
    link_latest,
    step_of,
    trial_name,
    write_curves_csv,
    write_json,
    write_text_atomic,
)
from eval.summary import analyze_sweep_dir, failure_message, format_table, trial_summary
from orchestrator.budget import describe as describe_budget
from orchestrator.budget import steps_by_lr, steps_of_trials
from orchestrator.console.interrupt import StopOnSignal, clear_interrupted, run_stoppable, tune_stopper
from orchestrator.console.sweep_log import FileOnlyStream, sweep_logging
from orchestrator.console.sweep_log import say as log
from orchestrator.placement import SAMPLER_RESOURCE, sampler_placement, trial_placement
from orchestrator.plan.resolve import Resolved, resolve, resolve_run
from orchestrator.run.build import build_train_spec, resolve_capability, resolve_model, sampler_spec
from orchestrator.run.labels import preflight_labels, sampler_onpolicy
from orchestrator.run.pack import Pack, group_trials, pack_size, pack_state_dir
from orchestrator.run.sampler_session import ray_cluster, sampler_actors
from orchestrator.run.trial import TrialContext, eval_prompts
from orchestrator.schema import Config, ConfigError
from workers.labels.teacher import ensure_labels
from workers.sample.engine_log import ENGINE_LOG_ENV, VERBOSE_ENV
from workers.tracking import resolve_wandb_mode


class SweepFailed(RuntimeError):
    """Some trials failed for good; the message names each one, its error's last line and its full error's file."""


def summarize_sweep(sweep_dir: Path, threshold: float, title: str = "") -> list[TrialAnalysis]:
    """summary.json, curves.csv and the plot from the run folder alone; returns the per-trial analyses the table
    is made of."""
    trials = analyze_sweep_dir(sweep_dir, threshold)
    summary = [trial_summary(t) for t in trials]
    write_json(SweepDir(sweep_dir).summary, summary)
    if summary:
        write_curves_csv(sweep_dir)
        plot_curves(summary, threshold, sweep_dir / "attack_rate_vs_step.png", title)
    return trials


def last_error_line(error: Any) -> str:
    """The last non-empty line of an exception's text: for a Ray task error, the original exception's line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def record_failures(sweep_dir: Path, results: list[Any]) -> dict[str, dict[str, Any]]:
    """error.json in each failed trial's folder (so the run files say it failed, and how), from Tune's results:
    the error's last line and Tune's error.txt under the real tune_<date>/ folder."""
    errors = {}
    for r in results:
        error_file = Path(r.path) / "error.txt" if r.path else None
        members = tune_members(r.config)
        for lr, seed in members:  # a pack's error is each of its unfinished members'
            trial = SweepDir(sweep_dir).trial(lr, seed)
            if len(members) > 1 and trial.finished():
                continue
            errors[trial.name] = trial.record_error(
                last_error_line(r.error), str(error_file if error_file is None or error_file.exists() else r.path))
    return errors


def tune_members(config: dict[str, Any]) -> list[tuple[float, int]]:
    """The (lr, seed) of every member of the pack a Tune trial runs (its config["trial"])."""
    return [(float(m["lr"]), int(m["seed"])) for m in config["trial"]["members"]]


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """One Tune trial: one pack of trials (orchestrator/run/pack.py; a pack of one is a lone trial). Each member's rows
    are reported tagged with its name ("trial"). A deterministic error (a member wrote failed.json: a bad adapter, a
    bad config) ends it here as a normal return, since Tune's FailureConfig retries every raised error and a retry
    would fail the same way; run_sweep reports that member as failed from that file, and the pack's other
    unfinished members run again on the next `resume=`."""
    from ray import tune

    members = tune_members(config)
    failed = [SweepDir(Path(ctx.sweep_dir)).trial(lr, seed).failed for lr, seed in members]
    for path in failed:
        path.unlink(missing_ok=True)  # an earlier run's: this attempt decides afresh

    def report(name: str, row: dict[str, Any]) -> None:
        tune.report(row | {"trial": name})

    try:
        if ctx.placement.num_workers > 1:  # trainer workers in their own placement group
            from orchestrator.run.distributed import run_distributed_pack

            run_distributed_pack(ctx, members, report)
        else:  # the trainer runs in this process: fastest on a laptop
            Pack(ctx, members, report).run()
    except Exception:
        if any(path.exists() for path in failed):
            return
        raise


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def check_sweep_folder(sweep_dir: Path, config_text: str) -> bool:
    """True when the folder already holds this very sweep (so only missing trials run); refuses a
    folder that holds a different sweep's config, naming the keys that differ."""
    path = sweep_dir / "config.yaml"
    if not path.exists():
        return False
    old = path.read_text()
    if old == config_text or _resolved_text(old) == config_text:  # a folder from before resolution: auto values
        return True
    import yaml

    a, b = _flatten(yaml.safe_load(old)), _flatten(yaml.safe_load(config_text))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    raise ConfigError(
        f"{sweep_dir} already holds a different sweep (differs in: {', '.join(keys[:8])}). "
        f"Choose a new folder (hydra.run.dir=...), or finish that sweep with resume={sweep_dir}"
    )


def _resolved_text(text: str) -> str | None:
    """config.yaml text as the plan resolves it, or None when it no longer composes."""
    from orchestrator.config import to_typed
    from orchestrator.schema import Config as Schema

    try:
        loaded = OmegaConf.merge(OmegaConf.structured(Schema), OmegaConf.create(text))
        return config_yaml(resolve(to_typed(loaded)))
    except Exception:  # any failure means "not the same sweep"; the caller names the differing keys
        return None


def pending_packs(cfg: Config, sweep_dir: Path) -> list[list[tuple[float, int]]]:
    """The packs (orchestrator/run/pack.py) that still hold a trial without a finished result.json."""
    done = {(t["lr"], t["seed"]) for t in _all_trials(cfg)} - {(t["lr"], t["seed"]) for t in
                                                                 pending_trials(cfg, sweep_dir)}
    sw = cfg.sweep
    return [m for m in group_trials(list(sw.lrs), list(sw.seeds), pack_size(cfg), steps_by_lr(sw))
            if any(t not in done for t in m)]


def _all_trials(cfg: Config) -> list[dict[str, Any]]:
    return [{"lr": lr, "seed": seed} for lr in cfg.sweep.lrs for seed in cfg.sweep.seeds]


def pending_trials(cfg: Config, sweep_dir: Path) -> list[dict[str, Any]]:
    """(lr, seed) pairs without a finished result.json: what a (resumed) sweep still has to run."""
    return [
        {"lr": lr, "seed": seed}
        for lr in cfg.sweep.lrs
        for seed in cfg.sweep.seeds
        if not SweepDir(sweep_dir).trial(lr, seed).finished()
    ]


def record_refusals(sweep_dir: Path, todo: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """error.json beside each failed.json (a trial that ended on a deterministic error, which Tune saw as a
    normal return): the analysis then lists it as failed, like a trial whose retries ran out."""
    import json

    errors = {}
    for t in todo:
        trial = SweepDir(sweep_dir).trial(t["lr"], t["seed"])
        if trial.failed.exists():
            errors[trial.name] = trial.record_error(json.loads(trial.failed.read_text())["message"], str(trial.failed))
    return errors


def resume_problems(trial_dir: Path, state_dir: Path | None = None) -> list[str]:
    """What would stop a trial from resuming from its files: a corrupt resume point, a missing trainer state,
    or an adapter that is truncated or unreadable. Checked before Ray or an engine starts. `state_dir`: the
    trainer state's folder when it is not the trial's own (a pack's)."""
    import json

    from safetensors import safe_open

    from workers.train.state import ResumeError, read_resume_point

    state_dir = state_dir or TrialDir(trial_dir).state
    try:
        point = read_resume_point(state_dir)
    except ResumeError as err:
        return [str(err)]
    if point is None:
        return []
    problems = []
    state = state_dir / point["tag"]
    if not state.is_dir() or not any(state.iterdir()):
        problems.append(f"{state} is missing or empty")
    for adapter in sorted(TrialDir(trial_dir).adapters.glob("step_*")):
        if step_of(adapter) > point["step"]:
            continue  # past the resume point: retrained and rewritten
        try:
            json.loads((adapter / "adapter_config.json").read_text())
            with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as fh:
                fh.keys()  # parses the header, which also checks the file is not truncated
        except Exception as err:  # missing file, bad JSON, bad header: all mean the same to the user
            problems.append(f"{adapter} is corrupt ({type(err).__name__}: {err})")
    return problems


def check_resumable(sweep_dir: Path, packs: list[list[tuple[float, int]]]) -> None:
    """Refuse to resume when a pending trial's files (or its pack's trainer state) are damaged, naming each one and
    the fix (packs: orchestrator/run/pack.py; a lone trial is a pack of one)."""
    bad = {}
    for members in packs:
        state_dir = pack_state_dir(sweep_dir, members)
        for lr, seed in members:
            trial = SweepDir(sweep_dir).trial(lr, seed)
            if not trial.path.exists() or trial.finished():
                continue
            trial_dir = trial.path
            problems = resume_problems(trial_dir, state_dir)
            if problems:
                bad[trial_dir] = problems
    if bad:
        lines = [f"  {p}" for problems in bad.values() for p in problems]
        folders = " ".join(str(d) for d in bad)
        raise ConfigError("cannot resume: damaged trial files\n" + "\n".join(lines) +
                          f"\nDelete the damaged trial folder(s) to rerun those trials from scratch: rm -r {folders}")


def config_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(replace(cfg, resume=None)))


def check_before_compute(run: Config | Resolved) -> str:
    """Every check that reads data or the environment, before the sweep folder gets a file or compute starts:
    the W&B mode (online without a key is refused), the question bank and the prompts built from it.
    Returns the resolved W&B mode. Raises ConfigError or DataError naming the problem and the fix."""
    cfg = resolve_run(run).config  # the plan refuses what it cannot fit, and a pack the packed trainer cannot train
    try:
        wandb_mode = resolve_wandb_mode(cfg.tracker.mode)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    eval_prompts(cfg.setting, cfg.sample)  # loads and checks the bank, renders every template
    return wandb_mode


def run_sweep(cfg: Config, sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep, its output (notes, progress tables, errors, engines' start-up) also in <sweep_dir>/sweep.log."""
    sweep_dir = sweep_dir.resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with sweep_logging(sweep_dir):
        return _run_sweep(cfg, sweep_dir)


def _run_sweep(cfg: Config, sweep_dir: Path) -> list[dict[str, Any]]:
    started = time.time()
    sweep_id = f"{cfg.setting.name}-{sweep_dir.name}"
    run = resolve_run(cfg)  # the plan, once: its numbers in place of `auto`; config.yaml records what runs
    cfg = run.config
    wandb_mode = check_before_compute(run)
    text = config_yaml(cfg)
    resuming = check_sweep_folder(sweep_dir, text)
    todo = pending_trials(cfg, sweep_dir)
    packs = pending_packs(cfg, sweep_dir)
    if resuming:
        check_resumable(sweep_dir, packs)
    if todo:  # a teacher endpoint that is down, or a bad label file, fails here: nothing written yet
        preflight_labels(cfg, sweep_dir)
    write_text_atomic(sweep_dir / "config.yaml", text)
    if not resuming:
        link_latest(sweep_dir, cfg.setting.name)
    clear_interrupted(sweep_dir)  # a resumed sweep is running again
    n_trials = len(cfg.sweep.lrs) * len(cfg.sweep.seeds)
    log(f"[sweep] {sweep_id}: {len(cfg.sweep.lrs)} LRs x {len(cfg.sweep.seeds)} seeds = {n_trials} trials, "
        f"{describe_budget(cfg.sweep)}, batch {cfg.train.batch_size}, LoRA rank {cfg.train.lora_rank}; "
        f"folder {sweep_dir}")
    if resuming:
        log(f"[sweep] resuming: {n_trials - len(todo)} trials finished, {len(todo)} to run")
    failed: dict[str, dict[str, Any]] = {}
    if todo and cfg.capability.benchmarks:
        from workers.capability import check_data

        try:
            check_data(resolve_capability(cfg))  # absent benchmark files: a clear error before any compute
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
    if todo:
        for t in todo:  # an error of an earlier run of this trial is not this run's
            SweepDir(sweep_dir).trial(t["lr"], t["seed"]).error.unlink(missing_ok=True)
        names = [trial_name(t["lr"], t["seed"], sweep_dir) for t in todo]  # Ctrl-C / SIGTERM: interrupted, not failed
        failed = record_failures(sweep_dir, run_stoppable(
            lambda stop: _run_trials(run, sweep_dir, sweep_id, packs, started, stop), sweep_dir, names,
            steps_of_trials(cfg.sweep, sweep_dir), started, log))
        failed |= record_refusals(sweep_dir, todo)
    trials = summarize_sweep(sweep_dir, cfg.sweep.threshold, f"{cfg.setting.name} ({cfg.model.name})")
    summary = [trial_summary(t) for t in trials]
    log("\n" + format_table(trials, cfg.sweep.threshold, cfg.sweep.collapse_other_rate))
    report = write_report([sweep_dir], sweep_dir) if summary else None
    if report and cfg.tracker.backend == "wandb" and wandb_mode != "disabled":
        from workers.tracking import log_to_wandb

        log_to_wandb(sweep_dir, cfg.tracker.mode)  # report tables and plots: a summary run of the group
    log(f"\n[sweep] done in {time.time() - started:.0f}s: {sweep_dir / 'summary.json'}, "
        f"{sweep_dir / 'attack_rate_vs_step.png'}, {report}")
    if failed:
        raise SweepFailed(failure_message([t for t in trials if t.name in failed], n_trials, failed))
    return summary


class _QuietTrialErrors(logging.Filter):
    """Drops Tune's own log of a failed trial (its traceback, "Trials did not complete"): the progress table names
    the failed trial and its error file as it happens, and the sweep ends with each one's error, without tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Trial task failed", "Trials did not complete"))


TUNE_ERROR_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune")


def _start_sweep_sampler(run: Resolved, start: Any, name: str, model_path: str, placement: Any, sweep_dir: Path,
                         started: float) -> Any:
    """The sweep's one sampler actor, placed beside the trials; where it landed goes to placement.json."""
    import ray

    cfg = run.config
    where = sampler_placement(cfg.sample.engine.tensor_parallel_size, cfg.cluster.gpus_per_node,
                              SAMPLER_RESOURCE in ray.cluster_resources(), cfg.cluster.nodes,
                              int(placement.gpus_per_worker * placement.num_workers),
                              dedicated=cfg.sample.engine.dedicated_gpus)
    log(f"[sampler] starting one vLLM engine for the whole sweep (multi-LoRA) with {where.actor_options()}...")
    # a dead actor process is restarted (engine and all) and its pending calls retried; threaded so
    # that requests of concurrent trials queue up inside the actor and share one engine call
    sampler = start(sampler_spec(run, model_path), options={"name": name, **where.actor_options()},
                    max_restarts=2, max_task_retries=2, max_concurrency=64)
    node = ray.get(sampler.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()))
    write_json(sweep_dir / "placement.json", {
        "sampler": {"node_id": node, **where.actor_options()},
        "trial": {"num_workers": placement.num_workers, "bundles": placement.bundles,
                  "strategy": placement.strategy, "backend": placement.backend}})
    log(f"[sampler] ready after {time.time() - started:.0f}s on node {node[:8]}; each trial: "
        f"{placement.num_workers} x {placement.worker_resources} ({placement.strategy})")
    return sampler


def _run_trials(run: Resolved, sweep_dir: Path, sweep_id: str, packs: list[list[tuple[float, int]]],
                started: float, stop: StopOnSignal) -> list[Any]:
    """Ray Tune over the pending packs with one vLLM engine; the failed results. A signal stops it by a Tune Stopper."""
    import ray
    from ray import tune

    from orchestrator.console.progress import ProgressTable

    cfg = run.config
    placement = trial_placement(cfg.train.num_workers, cfg.sweep.cpus_per_trial, cfg.cluster.gpus_per_node,
                                cfg.train.dist_backend, cfg.cluster.nodes)
    model_path = resolve_model(cfg)
    train_spec = build_train_spec(run, model_path, 0.0, 0)  # its refusals come before labels and engines
    onpolicy = cfg.setting.teacher.kind == "onpolicy"  # labelled by the sweep's engine, once it is up
    labels = None if onpolicy else ensure_labels(cfg.setting, sweep_dir, log, cache_dir=cfg.cache_dir)
    sampler_name = f"lrsweep-sampler-{os.getpid()}-{int(started)}"
    env = {"LRSWEEP_CACHE": cfg.cache_dir} | {k: os.environ[k] for k in (ENGINE_LOG_ENV, VERBOSE_ENV)
                                              if k in os.environ}  # engines log to sweep.log (sweep_log.py)
    with ray_cluster(cfg.sweep.ray_address, env, sampler_resource=not cfg.sweep.ray_address), \
            sampler_actors(log) as start:
        stop.claim()  # after ray.init, which installs its own SIGTERM handler
        sampler = _start_sweep_sampler(run, start, sampler_name, model_path, placement, sweep_dir, started)
        if labels is None:
            labels = ensure_labels(cfg.setting, sweep_dir, log, cache_dir=cfg.cache_dir, onpolicy=sampler_onpolicy(
                cfg, lambda *args: ray.get(sampler.generate.remote(*args))))
        ctx = TrialContext(
            sweep_dir=str(sweep_dir), sweep_id=sweep_id, sampler_name=sampler_name, setting=cfg.setting,
            model_name=cfg.model.name, train_spec=train_spec, labels_path=str(labels),
            sample=cfg.sample, tracker=cfg.tracker, threshold=cfg.sweep.threshold, early_stop=cfg.sweep.early_stop,
            placement=placement, organism_min_train_desired=cfg.sweep.organism_min_train_desired,
            collapse_other_rate=cfg.sweep.collapse_other_rate, keep_adapters=cfg.sweep.keep_adapters, sweep=cfg.sweep,
        )
        if cfg.capability.benchmarks:  # the model before training, once per sweep (cached in the sweep folder)
            from workers.capability import ensure_baseline

            cap = resolve_capability(cfg)
            baseline = ensure_baseline(cap, sweep_dir, model_path,
                                       lambda *args: ray.get(sampler.generate.remote(*args)), log)
            ctx = replace(ctx, capability=cap, capability_baseline=baseline)
        names = [trial_name(lr, seed, sweep_dir) for lr in cfg.sweep.lrs for seed in cfg.sweep.seeds]
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, ctx=ctx), placement.tune_resources()),
            param_space={"trial": tune.grid_search([{"members": [{"lr": lr, "seed": seed} for lr, seed in m]}
                                                    for m in packs])},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.sweep.max_concurrent_trials, reuse_actors=False),
            run_config=tune.RunConfig(
                name=f"tune_{time.strftime('%Y%m%d_%H%M%S')}", storage_path=str(sweep_dir), verbose=0,
                stop=tune_stopper(stop),
                failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_retries),
                callbacks=[ProgressTable(sweep_dir, names, steps_of_trials(cfg.sweep, sweep_dir),
                                         cfg.sweep.progress_interval_s, log_stream=FileOnlyStream())]),
        )
        quiet = _QuietTrialErrors()
        for name in TUNE_ERROR_LOGGERS:
            logging.getLogger(name).addFilter(quiet)
        try:  # a signal while the engine started: no trial starts
            return [] if stop.signum is not None else [r for r in tuner.fit() if r.error is not None]
        finally:
            for name in TUNE_ERROR_LOGGERS:
                logging.getLogger(name).removeFilter(quiet)
