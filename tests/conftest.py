"""The tier is the folder: tests/unit/ holds the fast tier, tests/integration/ the tests that run the real engines
(each of its tests gets the `integration` marker here, so `-m integration` and `-m "not integration"` still pick a
tier), tests/support/ the helpers both import by module name (`from fresh_process import ...`), tests/data/ data."""

import os
import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
UNIT, INTEGRATION, SUPPORT = TESTS / "unit", TESTS / "integration", TESTS / "support"

# before any test module is imported (pytest imports this conftest first); the spawned processes of
# fresh_process inherit sys.path, so they import these modules by the same names
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ `integration`; refuse a test under tests/unit/ that carries the
    marker itself (it belongs in tests/integration/). Unit tests then run before integration tests."""
    misplaced = [item.nodeid for item in items
                 if _under(item.path, UNIT) and item.get_closest_marker("integration") is not None]
    if misplaced:
        raise pytest.UsageError("tests under tests/unit/ must not be marked integration (the folder is the tier: move "
                                "them to tests/integration/): " + ", ".join(misplaced))
    for item in items:
        if _under(item.path, INTEGRATION):
            item.add_marker(pytest.mark.integration)
    items.sort(key=_order)  # stable: each file's order is kept


# the integration files that take minutes on 2 cores (docs/testing.md), longest first: under `-n 2 --dist loadfile`
# the two workers take files in this order, so a long file never starts last and leaves one worker idle
SLOWEST_FIRST = ("test_real_model.py", "test_capability_integration.py", "test_slurm_integration.py",
                 "test_bench_engines.py", "test_faults.py", "test_settings_integration.py", "test_interrupt_sweep.py",
                 "test_integration.py", "test_train_levers.py", "test_rehearsal.py", "test_multinode.py",
                 "test_real_text.py", "test_vllm_serve.py", "test_vllm_moe_lora.py", "test_pack_ranks.py",
                 "test_engine_fault.py")


def _order(item: pytest.Item) -> tuple[bool, int]:
    """Unit tests first; then the integration files in SLOWEST_FIRST order, then the rest."""
    if not _under(item.path, INTEGRATION):
        return False, 0
    name = item.path.name
    return True, SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)


# The toys the integration tests sweep, built by the product (`python -m orchestrator toy ...`) and kept here so a
# test session does not spend ~7 min of CPU rebuilding them: the default (wronglang_spanish), animal_flag's, and the
# capability probe's. tests/unit/test_seeded_toys.py fails, naming the command, when the code would build another.
SEEDED_TOYS = TESTS / "data" / "toys"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Where the toy models are cached for a test session (or LRSWEEP_CACHE when the caller sets it), seeded with
    the toys in tests/data/toys; any other toy is built on first use. Under pytest-xdist the workers share one folder
    in the session's base temp; the builds lock it (build_lock), so each is built once."""
    if os.environ.get("LRSWEEP_CACHE"):
        return Path(os.environ["LRSWEEP_CACHE"])
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "lrsweep-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("lrsweep-cache")
    for toy in SEEDED_TOYS.iterdir():
        final = cache / "toy" / toy.name
        if not final.exists():  # copied whole, then renamed into place: another worker never sees half a toy
            from eval.runfiles import publish_dir

            tmp = cache / "toy" / f".seed-{toy.name}-{os.getpid()}"
            shutil.copytree(toy, tmp)
            publish_dir(tmp, final, "build_info.json")
            shutil.rmtree(tmp, ignore_errors=True)
    return cache
