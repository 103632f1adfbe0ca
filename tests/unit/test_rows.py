"""The one reader of each kind of metrics.jsonl row (eval/rows.py), on rows whose answer is known by construction."""

from eval.rows import capability_rows, eval_rows, stop_row

ROWS = [
    {"step": 0, "kind": "eval", "eval_attack_rate": 1.0},
    {"step": 1, "kind": "train", "train_loss": 2.0},
    {"step": 2, "eval_attack_rate": 0.9},  # written before rows had a kind: an eval row
    {"step": 2, "kind": "capability", "benchmark": "mmlu", "score": 0.5, "rel_degradation": 0.1},
    {"step": 1, "kind": "eval", "eval_attack_rate": 0.95},
    {"step": 2, "kind": "eval", "eval_attack_rate": 0.8},  # a resumed trial wrote step 2 again: the last one wins
    {"step": 4, "kind": "eval", "eval_attack_rate": None},  # no rate: not a checkpoint result
    {"step": 2, "kind": "stop", "reason": "transfer", "steps_trained": 3},
]


def test_eval_rows_are_one_per_step_in_step_order_last_written_wins():
    assert [(r["step"], r["eval_attack_rate"]) for r in eval_rows(ROWS)] == [(0, 1.0), (1, 0.95), (2, 0.8)]


def test_eval_rows_are_copies():
    rows = [{"step": 0, "kind": "eval", "eval_attack_rate": 1.0}]
    eval_rows(rows)[0]["eval_attack_rate"] = 0.0
    assert rows[0]["eval_attack_rate"] == 1.0


def test_capability_and_stop_rows():
    assert [r["benchmark"] for r in capability_rows(ROWS)] == ["mmlu"]
    assert stop_row(ROWS) == {"step": 2, "kind": "stop", "reason": "transfer", "steps_trained": 3}
    assert stop_row(ROWS[:2]) is None
