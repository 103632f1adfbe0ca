"""lrsweep's command line.

    python -m orchestrator sweep setting=wronglang_spanish     # run an LR sweep (Hydra overrides follow)
    python -m orchestrator sweep resume=sweeps/<setting>/<date>  # finish an interrupted sweep
    python -m orchestrator sweep setting=animal_flag dry_run=true  # check a setting: prompts, labels, grader, grid
    python -m orchestrator sweep --help                        # Hydra's help: groups and options
    python -m orchestrator labels setting=wronglang_spanish    # teacher labels alone (cached, resumable)
    python -m orchestrator report SWEEP_DIR [SWEEP_DIR ...]    # report.md + plots from finished run folders
    python -m orchestrator grade setting=S --in answers.jsonl --out graded.jsonl  # grade any answer file
    python -m orchestrator regrade SWEEP_DIR [overrides]       # regrade a sweep's samples, rates, summary, report
    python -m orchestrator probe setting=animal_flag model=smollm2_135m [probe.n=100] [--out probe.json]
    python -m orchestrator plan model=qwen3_235b_a22b [--json]  # GPUs, memory, sampler shape, GPU-hours
    python -m orchestrator recover SWEEP_DIR [--trial T --step S]  # retrain a checkpoint on correct benchmark answers
    python -m orchestrator submit setting=... model=... cluster=slurm  # the sweep as one Slurm job
    python -m orchestrator status SWEEP_DIR                    # its Slurm state and per-trial progress
    python -m orchestrator dashboard --entity E --project P [--group SWEEP_ID]  # save the W&B workspace (LR panels)
    python -m orchestrator train --lr 1e-3 --out DIR [overrides]  # one trial's trainer alone (no Ray, no evaluation)
    python -m orchestrator toy [overrides]                     # build the toy model alone; prints its folder

`lrsweep <command> ...` (the package's console script) is the same command line.
"""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path

# conf/ and slurm/ are read from the source tree beside the packages (Hydra's config_path, the sbatch template)
SOURCE_TREE = Path(__file__).resolve().parents[1]
COMMANDS = {
    "sweep": "run an LR sweep: train every (lr, seed), sample and grade every checkpoint, summarise",
    "labels": "make the teacher labels for a setting (cached; a sweep reuses them); --help for where they go",
    "report": "write report.md (tables, plots) for one or more sweep folders; --help for options",
    "grade": "grade a jsonl of {split, prompt, response} rows with a setting's grader (--in, --out)",
    "regrade": "regrade every samples file of a sweep with the setting's current grader; rates, summary, report",
    "probe": "sample the model without adapters and print its desired/attack/other rates: is it an organism?",
    "plan": "print the resource plan and its arithmetic before any allocation (--json, --out plan.json)",
    "recover": "train a checkpoint on ~40 correct benchmark answers and re-measure capability and attack rates",
    "submit": "render a sweep's sbatch script into its folder and submit it to Slurm (--dry-run: only render)",
    "status": "a submitted sweep's Slurm state and each trial's progress from its run files (--json)",
    "dashboard": "save a W&B workspace with the note's panels (needs WANDB_API_KEY and the [dashboard] extra)",
    "train": "train one trial's LoRA alone, without Ray or evaluation (--lr, --seed, --out; Hydra overrides)",
    "toy": "build (or find) the toy model of a config alone and print its folder",
}


def usage() -> str:
    lines = ["usage: python -m orchestrator <command> [hydra overrides | report options]", "", "commands:"]
    lines += [f"  {name:9s} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def check_source_tree(root: Path = SOURCE_TREE) -> str | None:
    """Why lrsweep cannot run from where it is installed, or None: it needs its conf/ and slurm/ folders."""
    missing = [name for name in ("conf", "slurm") if not (root / name).is_dir()]
    if not missing:
        return None
    return (f"lrsweep's {' and '.join(f'{m}/' for m in missing)} folder(s) are not beside its packages in {root}: "
            "lrsweep runs from its source checkout. Clone it and install it editable: pip install -e \".[cpu]\" "
            "(\".[gpu]\" on a GPU machine), then run it from there")


# commands that answer --help themselves (argparse, Hydra, or their own text); the others print their docstring
OWN_HELP = ("sweep", "dashboard", "probe", "recover", "report", "train")
# commands that compose conf/ from Hydra overrides: `--cfg job` prints that config and runs nothing (sweep: Hydra's)
COMPOSING = ("labels", "probe", "plan", "submit", "toy", "train")
EXIT_USER_ERROR = 2  # a mistake in the input: the message names the fix (eval.errors.UserError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool that stops when its reader goes away


def wants_cfg_job(argv: list[str]) -> bool:
    return any(a in ("--cfg", "-c") and argv[i + 1:i + 2] == ["job"] for i, a in enumerate(argv)) \
        or "--cfg=job" in argv


def print_cfg_job(argv: list[str]) -> int:
    """Hydra's `--cfg job` for the commands that compose conf/ through its compose API: the config, unresolved."""
    from omegaconf import OmegaConf

    from orchestrator.config import compose_dict
    from orchestrator.config_keys import check_composed

    overrides = [a for a in argv if "=" in a and not a.startswith(("-", "hydra."))]
    dcfg = compose_dict(overrides)
    check_composed(dcfg)
    print(OmegaConf.to_yaml(dcfg), end="")
    return 0


def run_command(command: str, argv: list[str]) -> int:
    """The command's exit status. Its user errors (eval.errors.UserError) end here as one line naming the fix and
    exit status 2, never a traceback; a reader that closed the pipe (`status DIR --json | head`) ends it quietly."""
    from eval.errors import UserError

    try:
        module = import_module(f"orchestrator.commands.{command}")
        if command not in OWN_HELP and any(a in ("-h", "--help") for a in argv):
            print(f"{COMMANDS[command]}\n\n{(module.__doc__ or '').strip()}")
            code = 0
        elif command in COMPOSING and wants_cfg_job(argv):
            code = print_cfg_job(argv)
        else:
            code = module.main(argv)  # orchestrator/commands/<command>.py: main(argv) -> exit code
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside a sweep's trials (those end in orchestrator/console/interrupt.py)
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit finds no pipe
        return EXIT_CLOSED_PIPE


def main() -> None:
    problem = check_source_tree()
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(usage(), file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    command = sys.argv.pop(1)
    sys.exit(run_command(command, sys.argv[1:]))


if __name__ == "__main__":
    main()
