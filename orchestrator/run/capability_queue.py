"""A trial's capability evaluations as a queue of Ray requests to the sweep's sampler actor: sent after a
checkpoint's eval row, scored and written as they finish. Ray glue, so it lives in orchestrator/ (the scoring it
calls is workers.capability's)."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import ray

from eval.rows import capability_rows, eval_rows
from eval.runfiles import TrialDir, append_jsonl, step_name
from workers.capability import (
    capability_row,
    capability_seed,
    eval_items,
    max_new_tokens,
    score_responses,
    selected,
    write_samples,
)


class TrialCapability:
    """A trial's capability evaluations: sent after a checkpoint's eval row, scored and written as they finish."""

    def __init__(self, cap: Any, baseline: dict[str, dict[str, Any]], sampler: Any, trial_dir: Path, logger: Any,
                 max_steps: int, threshold: float, seed: int) -> None:
        self.cap, self.baseline, self.sampler, self.trial_dir, self.seed = cap, baseline, sampler, trial_dir, seed
        self.logger, self.max_steps, self.threshold = logger, max_steps, threshold
        self.items = {b: eval_items(cap, b)[0] for b in cap.benchmarks}
        self.pending: deque[tuple[int, str, Any]] = deque()

    def after_eval(self, step: int, eval_row: dict[str, Any]) -> None:
        """Send this checkpoint's requests if capability.checkpoints selects it."""
        if not selected(self.cap, step, eval_row, self.max_steps, self.threshold):
            return
        adapter = str(TrialDir(self.trial_dir).adapter(step))
        for bench, its in self.items.items():
            ref = self.sampler.generate.remote(adapter, [it.prompt for it in its], max_new_tokens(self.cap, bench),
                                               self.cap.temperature, 1.0, capability_seed(self.cap, self.seed, step))
            self.pending.append((step, bench, ref))
        self.drain(block=False)

    def resume(self, rows: list[dict[str, Any]]) -> None:
        """A restarted trial re-sends checkpoints evaluated before the restart whose capability rows are missing."""
        done = {(r["step"], r.get("benchmark")) for r in capability_rows(rows)}
        for r in eval_rows(rows):
            if any((r["step"], b) not in done for b in self.items):
                self.after_eval(int(r["step"]), r)

    def drain(self, block: bool) -> None:
        while self.pending:
            step, bench, ref = self.pending[0]
            ready, _ = ray.wait([ref], timeout=None if block else 0)
            if not ready:
                return
            self.pending.popleft()
            responses = ray.get(ref)
            s = score_responses(self.cap, bench, self.items[bench], responses, self.trial_dir / "judge_cache")
            write_samples(self.trial_dir / "capability" / f"{step_name(step)}_{bench}.jsonl", self.items[bench],
                          responses, s)
            row = capability_row(step, bench, s, self.baseline[bench]["score"])
            append_jsonl(self.logger.metrics_path, row)
            if self.logger.run is not None:  # per-benchmark keys: one W&B panel per benchmark
                self.logger.run.log({"step": step, f"capability/{bench}/score": s.score,
                                     f"capability/{bench}/rel_degradation": row["rel_degradation"]})
