"""Run-folder files: atomic writes and torn-line tolerance."""

from eval.runfiles import append_jsonl, read_jsonl, trial_name, write_json


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 0})
    append_jsonl(path, {"step": 1})
    with open(path, "a") as fh:
        fh.write('{"step": 2, "eval_att')  # a crash mid-append
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_json(tmp_path / "a.json", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text().strip().endswith("}")


def test_trial_names_are_distinct_per_lr_and_seed():
    names = {trial_name(lr, s) for lr in (1e-4, 3e-4, 1e-3) for s in (0, 1)}
    assert len(names) == 6 and trial_name(1e-3, 0) == "lr0.001_seed0"
