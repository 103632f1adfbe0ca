"""Every command in README.md's fenced blocks works as written, in a form that starts no engine.

    python -m pytest -q tests/unit/test_readme.py

`sweep` runs as its dry run, `plan` as written, `submit` and the other config-composing commands compose (and
`submit` resolves) their config, and the commands that read a sweep folder answer `--help`. The README's install
and test commands are the ones CI (.ci/run) follows.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PREFIX = "python -m orchestrator "
COMPOSED = {"submit", "probe", "labels"}  # compose their config: no engines, no endpoints, no sbatch
FOLDER_READERS = {"status", "report", "recover", "dashboard", "regrade"}  # read a sweep folder or W&B: --help


def fenced_lines(text: str) -> list[str]:
    """The shell lines of the ```bash blocks, continuation lines joined, comments and blank lines dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(shlex.join(words) if "#" in line else " ".join(line.split()))
    return lines


COMMANDS = [line for line in fenced_lines(README) if line.startswith(PREFIX)]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_readme_fits_a_newcomers_ten_minutes() -> None:
    assert len(README.splitlines()) <= 300
    assert len(COMMANDS) >= 10, COMMANDS


def test_every_bracketed_override_is_quoted() -> None:
    """zsh (macOS's default shell) reads an unquoted key=[a,b] as a glob and refuses the command: in the README's
    fenced and indented commands, and in docs/."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        indented = [line.strip() for line in text.splitlines() if line.startswith("    python -m orchestrator")]
        for line in fenced_lines(text) + indented:
            assert not re.search(r"(^|\s)[\w.+]+=\[", line), f"{path.name}: quote the override in: {line}"


def test_install_and_test_commands_are_the_ones_ci_runs() -> None:
    lines = fenced_lines(README)
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ('pip install -e ".[cpu,test]"', "pip uninstall -y torchvision torchaudio torchcodec",
                    "apt-get install -y slurm-wlm munge"):
        assert any(command in line for line in lines), f"README lost {command!r}"
    suite = "python -m pytest -q -n 2"
    assert suite in lines, f"README lost the whole suite's command {suite!r}"
    assert 'pip install -q -e ".[cpu,test]"' in ci and f"\n{suite}\n" in ci


@pytest.mark.parametrize("line", COMMANDS, ids=[c[len(PREFIX):][:60] for c in COMMANDS])
def test_readme_command_works(line: str, tmp_path: Path) -> None:
    name, *args = shlex.split(line)[3:]
    if name in FOLDER_READERS:
        proc = run_cli([name, "--help"], tmp_path)
    elif name in COMPOSED:
        check_composed(name, [a for a in args if not a.startswith("--")])
        return
    elif name == "sweep":
        proc = run_cli([name, *args, "dry_run=true"], tmp_path)
        assert list(tmp_path.iterdir()) == [], "a dry run wrote files"
    else:
        proc = run_cli([name, *args], tmp_path)
    assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def check_composed(name: str, overrides: list[str]) -> None:
    from orchestrator.config import compose_config

    if name == "submit":  # model.path names a folder on the reader's cluster: compose with the config's hub id
        overrides = [a for a in overrides if not a.startswith("model.path=")]
    cfg = compose_config(overrides)
    if name == "submit":  # what submit checks before sbatch
        from orchestrator.commands.submit import check_cluster
        from orchestrator.plan.resolve import resolve

        check_cluster(cfg.cluster)
        resolve(cfg)
