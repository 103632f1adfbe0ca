"""lrsweep's command line.

    python -m orchestrator sweep setting=wronglang_spanish     # run an LR sweep (Hydra overrides follow)
    python -m orchestrator sweep resume=sweeps/<setting>/<date>  # finish an interrupted sweep
    python -m orchestrator sweep --help                        # Hydra's help: groups and options
    python -m orchestrator report SWEEP_DIR [SWEEP_DIR ...]    # report.md + plots from finished run folders
    python -m orchestrator submit setting=... model=... cluster=slurm  # the sweep as one Slurm job
    python -m orchestrator status SWEEP_DIR                    # its Slurm state and per-trial progress
"""

from __future__ import annotations

import sys

COMMANDS = {
    "sweep": "run an LR sweep: train every (lr, seed), sample and grade every checkpoint, summarise",
    "report": "write report.md (tables, plots) for one or more sweep folders; --help for options",
    "submit": "render a sweep's sbatch script into its folder and submit it to Slurm (--dry-run: only render)",
    "status": "a submitted sweep's Slurm state and each trial's progress from its run files (--json)",
}


def usage() -> str:
    lines = ["usage: python -m orchestrator <command> [hydra overrides | report options]", "", "commands:"]
    lines += [f"  {name:8s} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(usage(), file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    command = sys.argv.pop(1)
    if command == "sweep":
        from orchestrator.cli import resume_argv, sweep_main

        sys.argv = resume_argv(sys.argv)
        sweep_main()
    elif command == "report":
        from orchestrator.report_cmd import main as report_main

        sys.exit(report_main(sys.argv[1:]))
    elif command in ("submit", "status"):
        from orchestrator.submit import status_main, submit_main

        sys.exit((submit_main if command == "submit" else status_main)(sys.argv[1:]))


if __name__ == "__main__":
    main()
