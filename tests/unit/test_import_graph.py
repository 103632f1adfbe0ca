"""The project's layering, read from its import graph (ast, so imports inside functions count too).

orchestrator/ (CLI, planning, Ray) may import workers/ and eval/; workers/ (engines) may import eval/; eval/ (pure
science, file readers) imports neither. eval/ reaches workers/ only through its documented plug-in point,
eval.grader_kinds.GRADER_KINDS (grader kinds built outside eval/, imported by name when a setting asks for them);
EVAL_PLUGIN_POINTS would list any import that had to stay. No cycles among the project's modules.

Inside orchestrator/ the rooms go one way down: __main__ -> commands/ (argv and exit codes; no command imports
another) -> run/ (a sweep running) -> plan/ (before any compute) and console/ (the terminal: log, progress, Ctrl-C)
-> the config modules at orchestrator/'s top (schema, config, config_keys, budget, placement).

    python tests/unit/test_import_graph.py  # prints the graph's summary: layer violations, cycles, in-function imports
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "workers", "eval")

# (importing module, imported module) pairs where eval/ may import workers/ directly, and why. Empty: the judge, the
# one grader eval/ cannot build itself, comes through the registry eval.grader_kinds.GRADER_KINDS.
EVAL_PLUGIN_POINTS: dict[tuple[str, str], str] = {}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import names (its longest known prefix), or None for a third-party import."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, imported inside a function) for each project import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import: climb from this module's package
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod when there is one
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in child.names]
            targets = {resolve(name, modules) for name in names} - {None, module}
            found.extend((target, in_function) for target in sorted(targets))
            visit(child, nested)

    visit(tree, False)
    return found


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], int]:
    """module -> the project modules it imports anywhere in its file; and how many import statements of project
    modules sit inside functions (`from m import a, b` counts once per module it names)."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    in_function = 0
    for module, path in modules.items():
        edges = imports_of(module, path, modules)
        graph[module] = {target for target, _ in edges}
        in_function += sum(1 for _, nested in edges if nested)
    return graph, in_function


def layer(module: str) -> str:
    return module.split(".")[0]


# orchestrator/'s rooms, highest first: a module may import its own room or a lower one, never a higher one
ORCHESTRATOR_ROOMS = {"__main__": 4, "commands": 3, "run": 2, "plan": 1, "console": 1}


def room_rank(module: str) -> int:
    """An orchestrator module's rank: its room's (ORCHESTRATOR_ROOMS), 0 for the config modules at the top."""
    parts = module.split(".")
    return ORCHESTRATOR_ROOMS.get(parts[1], 0) if len(parts) > 1 else 0


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that reaches up a layer: workers/ or eval/ -> orchestrator/, eval/ -> workers/ (bar plug-ins);
    inside orchestrator/, a lower room -> a higher one, plan/ <-> console/, or one command -> another."""
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer(module) in ("workers", "eval") and layer(target) == "orchestrator":
                problems.append(f"{module} -> {target}")
            elif layer(module) == "eval" and layer(target) == "workers" and (module, target) not in EVAL_PLUGIN_POINTS:
                problems.append(f"{module} -> {target}")
            elif layer(module) == layer(target) == "orchestrator":
                rooms = {module.split(".")[1] if "." in module else "", target.split(".")[1]}
                if (room_rank(target) > room_rank(module) or rooms == {"plan", "console"}
                        or module.startswith("orchestrator.commands.") and target.startswith("orchestrator.commands.")):
                    problems.append(f"{module} -> {target}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted: every cycle lies in one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # recursion depth is bounded by the module count (~100)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def test_workers_and_eval_do_not_import_orchestrator_and_eval_not_workers():
    graph, _ = import_graph()
    assert layer_violations(graph) == []


def test_no_import_cycles_among_project_modules():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_only_orchestrator_imports_ray():
    """The README's contract: Ray (actors, Tune, ray.wait) is orchestrator/'s; workers/ and eval/ run without it."""
    found = []
    for module, path in project_modules().items():
        if layer(module) == "orchestrator":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{module} -> {n}" for n in names if n == "ray" or n.startswith("ray.")]
    assert found == []


def test_grader_kinds_name_project_modules_with_the_three_parts():
    """Each entry of the grader registry names a module of eval/grader_kinds/, or (the plug-in point) of workers/,
    that defines Config, problems and build: a renamed judge fails here, not in a sweep."""
    from eval.grader_kinds import GRADER_KINDS

    modules = project_modules()
    for kind, module in GRADER_KINDS.items():
        assert module in modules, (kind, module)
        assert module.startswith("eval.grader_kinds.") or layer(module) == "workers", (kind, module)
        text = modules[module].read_text()
        assert all(part in text for part in ("class Config", "def problems(", "def build(")), (kind, module)


def test_every_command_is_one_module_named_for_it():
    """`python -m orchestrator <name>` runs orchestrator/commands/<name>.py's main(argv); commands/ holds nothing
    else."""
    from orchestrator.__main__ import COMMANDS

    modules = project_modules()
    commands = {m.removeprefix("orchestrator.commands.") for m in modules if m.startswith("orchestrator.commands.")}
    assert commands == set(COMMANDS)
    for name in COMMANDS:
        assert "\ndef main(argv: list[str]" in modules[f"orchestrator.commands.{name}"].read_text(), name


def test_rooms_hold_at_most_a_dozen_modules():
    """Issue 23: no folder of orchestrator/ or workers/ holds more than ~12 modules (13 commands are one room)."""
    counts: dict[str, int] = {}
    for module, path in project_modules().items():
        if layer(module) in ("orchestrator", "workers") and path.name != "__init__.py":
            folder = str(path.parent.relative_to(ROOT))
            counts[folder] = counts.get(folder, 0) + 1
    assert {f: n for f, n in counts.items() if n > 13} == {}


def test_the_room_order_is_checked(tmp_path):
    """A lower room importing a higher one, or one command importing another, is reported."""
    for folder in ("orchestrator/commands", "orchestrator/run", "orchestrator/plan", "orchestrator/console",
                   "workers", "eval"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "orchestrator" / "schema.py").write_text("from orchestrator.plan import planner\n")
    (tmp_path / "orchestrator" / "plan" / "planner.py").write_text("from orchestrator.console import log\n")
    (tmp_path / "orchestrator" / "console" / "log.py").write_text("")
    (tmp_path / "orchestrator" / "run" / "sweep.py").write_text("import orchestrator.plan.planner\n")
    (tmp_path / "orchestrator" / "commands" / "a.py").write_text("from orchestrator.commands import b\n")
    (tmp_path / "orchestrator" / "commands" / "b.py").write_text("from orchestrator.run import sweep\n")
    graph, _ = import_graph(tmp_path)
    assert layer_violations(graph) == ["orchestrator.commands.a -> orchestrator.commands.b",
                                       "orchestrator.plan.planner -> orchestrator.console.log",
                                       "orchestrator.schema -> orchestrator.plan.planner"]


def test_graph_reader_sees_function_level_and_relative_imports(tmp_path):
    """The checks above are only as good as the reader: an import hidden in a function, or written relative, counts."""
    (tmp_path / "workers").mkdir()
    (tmp_path / "eval").mkdir()
    (tmp_path / "orchestrator").mkdir()
    for package in PACKAGES:
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "orchestrator" / "schema.py").write_text("from workers import a\n")
    (tmp_path / "workers" / "a.py").write_text("def f():\n    from orchestrator.schema import X\n")
    (tmp_path / "workers" / "b.py").write_text("from . import a\n")
    (tmp_path / "eval" / "c.py").write_text("import workers.b\n")
    graph, in_function = import_graph(tmp_path)
    assert graph["workers.b"] == {"workers.a"}
    assert in_function == 1
    assert layer_violations(graph) == ["eval.c -> workers.b", "workers.a -> orchestrator.schema"]
    assert cycles(graph) == [["orchestrator.schema", "workers.a"]]


if __name__ == "__main__":
    graph, in_function = import_graph()
    violations = layer_violations(graph)
    found = cycles(graph)
    edges = sum(len(t) for t in graph.values())
    print(f"{len(graph)} modules, {edges} project imports, {in_function} inside functions")
    print(f"layer violations ({len(violations)}):", *violations, sep="\n  ")
    print(f"cycles ({len(found)}):", *(" <-> ".join(c) for c in found), sep="\n  ")


def test_every_name_imported_from_a_project_module_exists_there():
    """`from workers.capability import TrialCapability` inside a function fails only when that line runs (a sweep with
    capability benchmarks): a class moved to another module must take every importer with it. Checked statically
    against each module's top-level names (definitions, assignments, its own imports)."""
    modules = project_modules()
    defined: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.If | ast.Try):  # guarded definitions and imports
                names |= {n.name for n in ast.walk(node) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
                names |= {(a.asname or a.name).split(".")[0] for n in ast.walk(node)
                          if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
        defined[module] = names
    missing = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module in modules:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if alias.name not in defined[node.module] and submodule not in modules:
                        missing.append(f"{module}: from {node.module} import {alias.name}")
    assert missing == []


LONG_FUNCTION_LINES = 60  # the house's bound for orchestrator/ and workers/ (issue 18)
LONG_REASON = "on purpose"  # what a longer function's docstring or comments say, with the reason


def long_functions_without_a_reason(root: Path = ROOT, bound: int = LONG_FUNCTION_LINES) -> list[str]:
    """Functions in orchestrator/ and workers/ longer than `bound` lines whose docstring and comments do not say
    why ("... on purpose: <reason>")."""
    found = []
    for package in ("orchestrator", "workers"):
        for path in sorted((root / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    text = "\n".join(lines[node.lineno - 1:node.end_lineno])
                    if length > bound and LONG_REASON not in text:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_functions_say_why(tmp_path):
    assert long_functions_without_a_reason() == []
    # the check itself: a 61-line function without a reason is found, one with a reason is not
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (tmp_path / "workers").mkdir()
    (tmp_path / "orchestrator").mkdir()
    (tmp_path / "workers" / "a.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "orchestrator" / "b.py").write_text(f"def long():\n    # one loop on purpose: ranks' order\n{body}\n")
    assert long_functions_without_a_reason(tmp_path) == ["workers/a.py:1 long (61 lines)"]
