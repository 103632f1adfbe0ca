import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Where the toy model is built once per test session (or LRSWEEP_CACHE when the caller sets it)."""
    if os.environ.get("LRSWEEP_CACHE"):
        return Path(os.environ["LRSWEEP_CACHE"])
    return tmp_path_factory.mktemp("lrsweep-cache")
