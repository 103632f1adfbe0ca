"""The sweep command, Hydra's entry point: `@hydra.main` appears here once; below it, code gets typed objects.

    python -m orchestrator sweep setting=wronglang_spanish [overrides]   # dry_run=true: check, train nothing
    python -m orchestrator sweep resume=sweeps/<setting>/<date>         # finish an interrupted sweep
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from orchestrator.config import CONF_DIR, load_resumed
from orchestrator.schema import ConfigError, register_configs

register_configs()


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=DIR` reuses DIR as Hydra's run folder (no new dated folder, no second .hydra/ record)."""
    for arg in argv:
        if arg.startswith("resume="):
            folder = Path(arg.split("=", 1)[1]).expanduser().resolve()
            return argv + [f"hydra.run.dir={folder}", "hydra.output_subdir=null"]
    return argv


def discard_bookkeeping(run_dir: Path) -> None:
    """Remove a run folder that holds only Hydra's own records (.hydra/, its log): what a refused command
    leaves behind must not need cleaning by hand. A folder with anything else in it is left untouched."""
    if not run_dir.is_dir():
        return
    entries = list(run_dir.iterdir())
    if all(e.name == ".hydra" or (e.is_file() and e.suffix == ".log") for e in entries):
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def sweep_main(dcfg: DictConfig) -> None:
    from eval.errors import UserError
    from orchestrator.config import settings_for_toy, to_typed

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if dcfg.resume:
            dcfg = load_resumed(Path(dcfg.resume).expanduser().resolve(), list(HydraConfig.get().overrides.task))
        cfg = to_typed(dcfg)
        if not dcfg.resume:  # what the rates and labels will mean: refused before compute (a resume is as started)
            from orchestrator.plan.preflight import preflight

            preflight(cfg)
        if cfg.model.path is None and cfg.model.toy is not None:  # model=toy: refuse an untaught setting first
            settings_for_toy(cfg)
        from orchestrator.console.interrupt import SweepInterrupted, end_interrupted
        from orchestrator.run.sweep import SweepFailed, run_sweep

        try:
            run_sweep(cfg, run_dir)
        except SweepFailed as err:  # the trials' own errors are in their files: no traceback of the driver
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except SweepInterrupted as err:  # Ctrl-C or SIGTERM: a pause; exit 130 / 143 with the resume command
            end_interrupted(err)
    except UserError as err:  # bad input: refused before compute, nothing left to clean
        print(f"error: {err}", file=sys.stderr)
        discard_bookkeeping(run_dir)
        sys.exit(2)


MULTIRUN_REFUSED = (
    "sweep takes no -m/--multirun: one command is one sweep folder. Put the grid in one sweep: "
    "'sweep.lrs=[1e-4,3e-4,1e-3]' 'sweep.seeds=[0,1]'; for several settings or models run one command each "
    "(each gets its own folder and W&B group)")


def precheck(argv: list[str]) -> None:
    """Compose and check the config before Hydra's entry point runs, so a misspelt key or config name is refused
    as every command refuses it (a ConfigError with a "did you mean", exit 2) and no run folder is made.
    Hydra's flags (--help, --cfg, ...) and resume= are left to the entry point."""
    from orchestrator.config import compose_config

    if any(a in ("-m", "--multirun") or a.startswith("hydra.mode=") for a in argv):
        raise ConfigError(MULTIRUN_REFUSED)
    if any(a.startswith(("-", "resume=")) for a in argv):
        return
    compose_config([a for a in argv if not a.startswith("hydra.") or a.startswith("hydra.searchpath=")])


def main(argv: list[str]) -> int:
    from orchestrator.run.dryrun import main as dry_run_main
    from orchestrator.run.dryrun import wants_dry_run

    precheck(argv)
    if wants_dry_run(argv) and not any(a.startswith("-") for a in argv):  # composed without a run folder
        return dry_run_main(argv)
    sys.argv = resume_argv([sys.argv[0], *argv])  # Hydra reads its overrides from sys.argv
    sweep_main()
    return 0
