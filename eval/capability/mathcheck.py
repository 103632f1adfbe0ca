"""Whether two LaTeX / plain math answers are the same object, bounded in time in any thread.

math-verify (Hugging Face's maintained checker: sympy equivalence of expressions, sets, intervals, equations)
bounds each parse and comparison with signal.alarm, which only a process's main thread may set. A Ray Tune
trial scores in a worker thread, where an answer like \\sum_{k=1}^{10^9} k^k would hang sympy for good. There
the check runs in a one-process pool, in that process's main thread, with math-verify's own timeout and a wall
clock backstop that kills the process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from typing import Any

TIMEOUT_S = 5  # math-verify's bound on one parse or comparison
BACKSTOP_S = 120  # the pool's process starts (imports sympy) and runs up to 3 bounded steps within this

_pool: Any = None
_pool_lock = threading.Lock()


def _equivalent_here(predicted: str, reference: str) -> bool | None:
    """sympy_equivalent in the calling thread, which must be a main thread for the timeout to hold."""
    from math_verify import parse, verify

    def read(text: str) -> list[Any]:
        text = text.strip()
        wrapped = text if text.startswith(("$", "\\boxed", "\\(", "\\[")) else f"${text}$"
        return parse(wrapped, parsing_timeout=TIMEOUT_S)

    gold, pred = read(reference), read(predicted)
    if not gold or not pred:
        return None
    return bool(verify(gold, pred, timeout_seconds=TIMEOUT_S))


def _shared_pool() -> Any:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = multiprocessing.get_context("spawn").Pool(1)
            atexit.register(_pool.terminate)
        return _pool


def _discard_pool(pool: Any) -> None:
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    pool.terminate()


def sympy_equivalent(predicted: str, reference: str) -> bool | None:
    """Whether predicted and reference are the same mathematical object (\\frac{\\sqrt3}{2} and \\sqrt{3}/2
    agree); None when math-verify cannot parse one of them. One it cannot decide in time is not a match."""
    if threading.current_thread() is threading.main_thread():
        return _equivalent_here(predicted, reference)
    pool = _shared_pool()
    pending = pool.apply_async(_equivalent_here, (predicted, reference))
    try:
        return pending.get(timeout=BACKSTOP_S)
    except multiprocessing.TimeoutError:
        _discard_pool(pool)
        return False
