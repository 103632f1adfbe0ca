"""The tier is the folder: tests/unit/ holds the fast tier, tests/integration/ the tests that run the real engines
(each of its tests gets the `integration` marker here, so `-m integration` and `-m "not integration"` still pick a
tier), tests/support/ the helpers both import by module name (`from fresh_process import ...`), tests/data/ data."""

import os
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
    items.sort(key=lambda item: _under(item.path, INTEGRATION))  # stable: each file's order is kept


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Where the toy model is built once per test session (or LRSWEEP_CACHE when the caller sets it)."""
    if os.environ.get("LRSWEEP_CACHE"):
        return Path(os.environ["LRSWEEP_CACHE"])
    return tmp_path_factory.mktemp("lrsweep-cache")
