"""lrsweep's command line.

    python -m orchestrator sweep setting=wronglang_spanish     # run an LR sweep (Hydra overrides follow)
    python -m orchestrator sweep --help                        # Hydra's help: groups and options
"""

from __future__ import annotations

import sys

COMMANDS = {"sweep": "run an LR sweep: train every (lr, seed), sample and grade every checkpoint, summarise"}


def usage() -> str:
    lines = ["usage: python -m orchestrator <command> [hydra overrides]", "", "commands:"]
    lines += [f"  {name:8s} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(usage(), file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    command = sys.argv.pop(1)
    if command == "sweep":
        from orchestrator.cli import sweep_main

        sweep_main()


if __name__ == "__main__":
    main()
