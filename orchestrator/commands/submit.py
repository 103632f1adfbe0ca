"""Submit a sweep to Slurm.

    python -m orchestrator submit setting=wronglang_spanish model=qwen3_235b_a22b cluster=slurm [overrides]
    python -m orchestrator submit resume=<sweep_dir>          # submit an existing sweep folder again
    python -m orchestrator submit ... --dry-run               # render the script and config, do not sbatch
    python -m orchestrator submit ... --pin-nodes             # ask for cluster.nodes even where fewer do as well
    python -m orchestrator submit 'hydra.searchpath=[file:///site/conf]' cluster=mysite setting=my_setting
    python -m orchestrator status <sweep_dir> [--json]        # then: its Slurm state + progress (commands/status.py)

`submit` validates the config, writes the sweep folder's config.yaml (the config the job runs), renders
slurm/sweep.sbatch into <sweep_dir>/slurm/, calls sbatch and appends the job id to <sweep_dir>/slurm/jobs.jsonl.
The job always runs `sweep resume=<sweep_dir>`, so a first start, a requeue after preemption and a re-submit
are the same thing. It prints the allocation's ceiling (nodes x GPUs x time limit) beside the plan's wall time,
GPU-hours and disk, and asks for the nodes the plan needs (fewer than cluster.nodes when those run the same waves)
unless --pin-nodes. `--dry-run` folders go under sweeps/_dry_run/, apart from real runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from eval.runfiles import append_jsonl, link_latest, write_text_atomic
from orchestrator.schema import ClusterConfig, Config, ConfigError
from workers.train.state import SAVE_REQUEST

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "slurm" / "sweep.sbatch"
RAY_WAIT_S = 300
HYDRA_TAKEN = ("hydra.run.dir=", "hydra.searchpath=")  # the Hydra settings submit takes
# Slurm's --time forms: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
TIME_LIMIT = re.compile(r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$")
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


# ---------------------------------------------------------------- config for the job


def check_cluster(c: ClusterConfig) -> None:
    """Slurm-side checks sbatch would otherwise fail on (or, worse, accept and fail hours later)."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(c.kind == "slurm", f"cluster.kind={c.kind!r}: submit needs cluster=slurm; "
                            "to run on this machine use `python -m orchestrator sweep ...`")
    need(c.nodes >= 1, f"cluster.nodes={c.nodes}: must be >= 1")
    need(c.gpus_per_node >= 0 and c.cpus_per_node >= 0, "cluster.gpus_per_node and cpus_per_node must be >= 0")
    need(bool(TIME_LIMIT.match(c.time_limit)),
         f"cluster.time_limit={c.time_limit!r}: use a Slurm time such as 48:00:00 or 2-00:00:00")
    need(1024 <= c.ray_port <= 65534, f"cluster.ray_port={c.ray_port}: must lie in 1024..65534")
    for name in ("partition", "account", "qos"):
        value = getattr(c, name)
        need(value is None or re.fullmatch(r"[\w.,:+-]+", value) is not None,
             f"cluster.{name}={value!r}: letters, digits and . , : + - _ only")
    for arg in c.sbatch_args:
        need(arg.startswith("--") and "\n" not in arg,
             f"cluster.sbatch_args holds {arg!r}: each entry is one long sbatch option, e.g. --constraint=h100")
    need(all("\n" not in line for line in c.setup), "cluster.setup: one shell line per list entry, no newlines")
    need(c.storage is None or Path(c.storage).is_absolute(),
         f"cluster.storage={c.storage!r}: give an absolute path on a filesystem every node mounts")


def job_config(cfg: Config) -> Config:
    """The config the job runs: the plan's numbers in place of `auto` (orchestrator/plan/resolve.py), joins the job's
    Ray
    cluster; W&B offline when compute nodes have no internet."""
    from orchestrator.plan.resolve import resolve

    check_cluster(cfg.cluster)
    cfg = resolve(cfg)  # a sweep that cannot fit is refused here, before sbatch, naming the fix
    tracker, sweep = cfg.tracker, cfg.sweep
    if cfg.cluster.offline:
        if tracker.mode == "online":
            raise ConfigError("tracker.mode=online but cluster.offline=true (compute nodes have no internet): "
                              "use tracker.mode=offline and `wandb sync` the runs afterwards, or set "
                              "cluster.offline=false")
        if tracker.mode == "auto":
            tracker = replace(tracker, mode="offline")
        path = cfg.model.path
        if path is not None and not Path(path).expanduser().is_dir():
            raise ConfigError(
                f"model.path={path!r} is not a local folder, and compute nodes are offline (cluster.offline=true): "
                "download the model to shared storage first (`hf download <id> --local-dir DIR`) "
                "and set model.path=DIR, or set cluster.offline=false")
    elif tracker.mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ConfigError("tracker.mode=online but WANDB_API_KEY is not set here; sbatch passes this shell's "
                          "environment to the job, so export WANDB_API_KEY=... before submitting")
    if sweep.ray_address is None:
        sweep = replace(sweep, ray_address="auto")  # the script exports RAY_ADDRESS of the job's own Ray head
    return replace(cfg, tracker=tracker, sweep=sweep, resume=None)


DRY_RUN_DIR = "_dry_run"  # sweeps/_dry_run/<setting>/<date>: a rendered-only job, apart from the real runs


def right_size(cfg: Config, pinned: bool) -> tuple[Config, str | None]:
    """Ask Slurm for the nodes the plan needs: when fewer than cluster.nodes run the same waves in the same wall time
    (the plan's time.nodes_needed), the job asks for those, and says so; `pinned` (submit --pin-nodes) keeps
    cluster.nodes as given."""
    from orchestrator.plan.planner import make_plan

    given = cfg.cluster.nodes
    need = make_plan(cfg, price=False).sections.get("time", {}).get("nodes_needed")
    if need is None or need >= given:
        return cfg, None
    if pinned:
        return cfg, (f"note: cluster.nodes={given} kept (--pin-nodes); the plan needs {need} for the same wall time")
    return replace(cfg, cluster=replace(cfg.cluster, nodes=need)), (
        f"asking for {need} nodes, not cluster.nodes={given}: the plan runs the same waves in the same wall time on "
        f"{need} (time.nodes_needed); submit --pin-nodes keeps {given}")


def time_limit_hours(limit: str) -> float:
    """Slurm's --time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in hours."""
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, *parts
    else:
        hours, minutes, seconds = parts
    return int(days or 0) * 24 + hours + minutes / 60 + seconds / 3600


def allocation_lines(cfg: Config) -> list[str]:
    """What the job asks Slurm for at most (nodes x GPUs x time limit) beside what the plan expects it to use."""
    from orchestrator.plan.planner import make_plan

    c = cfg.cluster
    hours = time_limit_hours(c.time_limit)
    plan = make_plan(cfg, price=False).sections
    t, disk = plan.get("time", {}), plan.get("disk", {})
    ceiling = (f"{c.nodes} nodes x {c.gpus_per_node} GPUs x {c.time_limit} = at most "
               f"{c.nodes * c.gpus_per_node * hours:,.0f} GPU-hours" if c.gpus_per_node else
               f"{c.nodes} nodes (no GPUs) x {c.time_limit}")
    lines = [f"allocation: {ceiling}"]
    if "wall_h" in t:
        gpu_h = f", {t['allocation_gpu_h']:,.1f} GPU-hours" if "allocation_gpu_h" in t else ""
        lines.append(f"plan:       ~{t['wall_h']:.3g} h wall{gpu_h}; disk ~{disk.get('total_gb', 0):.3g} GB "
                     f"(sweep.keep_adapters={cfg.sweep.keep_adapters})")
        if t["wall_h"] > hours:
            lines.append(f"warning: the plan's {t['wall_h']:.3g} h exceed cluster.time_limit={c.time_limit}: the job "
                         "stops at the limit; continue it with `submit resume=<sweep_dir>`, or raise the limit")
    return lines


def default_sweep_dir(cfg: Config, dry_run: bool = False) -> Path:
    base = Path(cfg.cluster.storage) if cfg.cluster.storage else Path.cwd()
    sweeps = base / "sweeps" / DRY_RUN_DIR if dry_run else base / "sweeps"
    return (sweeps / cfg.setting.name / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()


# ---------------------------------------------------------------- the script


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill {{NAME}} placeholders; a placeholder without a value (or a value without a place) is a bug."""
    names = set(re.findall(r"\{\{(\w+)\}\}", template))
    if names != set(values):
        raise ValueError(f"template placeholders {sorted(names)} != values {sorted(values)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)


def sbatch_directives(cfg: Config, sweep_dir: Path) -> list[str]:
    c = cfg.cluster
    opts = [f"--job-name=lrsweep-{cfg.setting.name}", f"--nodes={c.nodes}", "--ntasks-per-node=1",
            f"--time={c.time_limit}", f"--output={sweep_dir}/slurm/slurm-%j.out",
            "--open-mode=append",  # a requeued run appends to the same log
            "--requeue" if c.requeue else "--no-requeue"]
    if c.state_signal_s:  # to the batch shell only (B:): its trap asks the trainers to save state (sweep.sbatch)
        opts.append(f"--signal=B:USR1@{c.state_signal_s}")
    opts.append(f"--cpus-per-task={c.cpus_per_node}" if c.cpus_per_node else "--exclusive")
    if c.gpus_per_node:
        opts.append(f"--gpus-per-node={c.gpus_per_node}")
    opts += [f"--{name}={getattr(c, name)}" for name in ("partition", "account", "qos") if getattr(c, name)]
    return [f"#SBATCH {o}" for o in opts + list(c.sbatch_args)]


def render_script(cfg: Config, sweep_dir: Path, python: str, template: str | None = None) -> str:
    """The sbatch script for this sweep: #SBATCH lines, exports and set-up from the config, the fixed bootstrap."""
    c = cfg.cluster
    env = {
        "LRSWEEP_SWEEP_DIR": str(sweep_dir),
        "LRSWEEP_ROOT": str(ROOT),
        "LRSWEEP_PYTHON": c.python or python,
        "LRSWEEP_CACHE": cfg.cache_dir,
        "LRSWEEP_GPUS_PER_NODE": str(c.gpus_per_node),
        "LRSWEEP_RAY_PORT": str(c.ray_port),
        "LRSWEEP_RAY_WAIT_S": str(RAY_WAIT_S),
        "LRSWEEP_SAVE_REQUEST": str(sweep_dir / SAVE_REQUEST),
        "TOKENIZERS_PARALLELISM": "false",
    }
    if c.offline:
        env |= {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}  # never wait on a network that is not there
    script = render_template(template if template is not None else TEMPLATE.read_text(), {
        "SBATCH": "\n".join(sbatch_directives(cfg, sweep_dir)),
        "EXPORTS": "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
        "SETUP": "\n".join(c.setup) if c.setup else "# (none)",
    })
    leaked = secrets_in(script)
    if leaked:
        raise ConfigError(f"the Slurm script would contain the value of {leaked}; keep secrets in the environment "
                          "(sbatch passes it to the job), not in cluster.setup or other config values")
    return script


def secrets_in(text: str, environ: dict[str, str] | None = None) -> list[str]:
    """Names of secret-looking environment variables whose value appears in `text`."""
    environ = dict(os.environ) if environ is None else environ
    return sorted(k for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= 8 and v in text)


# ---------------------------------------------------------------- submit


def sbatch(script: Path) -> str:
    """Submit; returns the job id. Missing sbatch or a refused job raise with sbatch's own words."""
    try:
        proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise RuntimeError("sbatch not found on PATH: run submit on a Slurm login node (or `module load slurm`); "
                           f"the script is ready at {script}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch refused {script} (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit(cfg: Config, sweep_dir: Path, dry_run: bool = False, pinned: bool = True) -> str | None:
    """Write config.yaml and the script into sweep_dir, sbatch it and record the job; returns the job id. Unless
    `pinned`, the job asks for the nodes the plan needs (right_size). Prints the allocation beside the plan."""
    from orchestrator.run.sweep import check_sweep_folder, config_yaml

    check_cluster(cfg.cluster)
    cfg, note = right_size(cfg, pinned)
    cfg = job_config(cfg)
    for line in ([note] if note else []) + allocation_lines(cfg):
        print(line)
    sweep_dir = sweep_dir.resolve()
    text = config_yaml(cfg)
    check_sweep_folder(sweep_dir, text)  # a folder holding another sweep is refused, naming what differs
    script_text = render_script(cfg, sweep_dir, sys.executable)
    write_text_atomic(sweep_dir / "config.yaml", text)
    script = sweep_dir / "slurm" / "sweep.sbatch"
    write_text_atomic(script, script_text)
    script.chmod(0o755)
    if dry_run:
        return None
    job_id = sbatch(script)
    link_latest(sweep_dir, cfg.setting.name)
    append_jsonl(sweep_dir / "slurm" / "jobs.jsonl", {"job_id": job_id, "submitted": time.time(),
                                                      "script": str(script)})
    return job_id


# ---------------------------------------------------------------- command line


def wait_for_ray(address: str, nodes: int, timeout_s: float) -> None:
    """Block until `nodes` Ray nodes are alive at `address` (the sbatch script's bootstrap step)."""
    import ray

    deadline = time.time() + timeout_s
    ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        while (alive := sum(n["Alive"] for n in ray.nodes())) < nodes:
            if time.time() > deadline:
                raise SystemExit(f"[slurm] only {alive} of {nodes} Ray nodes joined {address} in {timeout_s:.0f}s")
            time.sleep(2)
        print(f"[slurm] Ray cluster ready: {alive} node(s) at {address}", flush=True)
    finally:
        ray.shutdown()


def main(argv: list[str]) -> int:
    from orchestrator.config import compose_config, load_resumed, to_typed

    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    dry_run, pin = "--dry-run" in argv, "--pin-nodes" in argv
    args = [a for a in argv if a not in ("--dry-run", "--pin-nodes")]
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    try:
        # site configs and settings outside the clone (hydra.searchpath) are read here; the job runs from the
        # self-contained config.yaml this writes, so it needs neither
        other_hydra = [a for a in args if a.startswith("hydra.") and not a.startswith(HYDRA_TAKEN)]
        if other_hydra:
            raise ConfigError(f"submit takes no Hydra settings besides hydra.run.dir and hydra.searchpath; drop "
                              f"{other_hydra}")
        if resume:
            folder = Path(resume).expanduser().resolve()
            cfg = to_typed(load_resumed(folder, args))
            sweep_dir = folder
        else:
            cfg = compose_config([a for a in args if not a.startswith("hydra.run.dir=")])  # searchpath included
            from orchestrator.plan.preflight import preflight

            preflight(cfg)
            sweep_dir = Path(run_dir).expanduser().resolve() if run_dir else default_sweep_dir(cfg, dry_run)
        job_id = submit(cfg, sweep_dir, dry_run=dry_run, pinned=pin or bool(resume))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # Hydra's own override errors (unknown group, misspelt key)
        if type(err).__module__.split(".")[0] in ("hydra", "omegaconf"):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    script = sweep_dir / "slurm" / "sweep.sbatch"
    if job_id is None:
        print(f"dry run: {script} and {sweep_dir / 'config.yaml'} written; submit with `sbatch {script}`")
    else:
        print(f"submitted job {job_id}: {sweep_dir}\n  log:    {sweep_dir}/slurm/slurm-{job_id}.out\n"
              f"  status: python -m orchestrator status {sweep_dir}")
    return 0


if __name__ == "__main__":  # the sbatch script's bootstrap: python -m orchestrator.commands.submit wait-ray ADDRESS N S
    if sys.argv[1:2] != ["wait-ray"] or len(sys.argv) != 5:
        sys.exit("usage: python -m orchestrator.commands.submit wait-ray ADDRESS NODES TIMEOUT_S")
    wait_for_ray(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
