"""The early-stopping rule on metrics rows whose answer is known by construction."""

import pytest

from eval.stopping import CAPABILITY, TRANSFER, should_stop, transfer_established


def evals(*points):
    """Eval rows from (step, attack rate) pairs."""
    return [{"kind": "eval", "step": s, "eval_attack_rate": a, "train_desired_rate": 0.9} for s, a in points]


def cap(step, *degradations):
    return [{"kind": "capability", "step": step, "benchmark": f"b{i}", "score": 1 - d, "n": 50, "baseline": 1.0,
             "rel_degradation": d} for i, d in enumerate(degradations)]


@pytest.mark.parametrize(
    "rows, k, expected",
    [
        (evals((0, 1.0), (1, 0.4)), 1, True),  # K=1: the first crossing stops
        (evals((0, 1.0), (1, 0.5)), 1, True),  # at the threshold counts
        (evals((0, 1.0), (1, 0.51)), 1, False),
        (evals((0, 1.0), (1, 0.4)), 2, False),  # one checkpoint under is not two
        (evals((0, 1.0), (1, 0.4), (2, 0.3)), 2, True),
        (evals((0, 1.0), (1, 0.4), (2, 0.6), (4, 0.3)), 2, False),  # a rise resets the run
        (evals((0, 1.0), (1, 0.4), (2, 0.6), (4, 0.3), (8, 0.2)), 2, True),
        (evals((4, 0.3), (0, 1.0), (2, 0.4)), 2, True),  # row order does not matter
        (evals((0, 0.2), (1, 0.1), (2, 0.0)), 3, True),  # transferred before training: stops at the 3rd
        (evals(), 1, False),
        (evals((0, 1.0), (1, 0.4), (1, 0.9)), 1, False),  # a repeated step: the last row wins
    ],
)
def test_transfer_needs_k_consecutive_checkpoints(rows, k, expected):
    assert transfer_established(rows, 0.5, k) is expected


@pytest.mark.parametrize(
    "rows, k, limit, expected",
    [
        (evals((0, 1.0), (1, 0.9)), 2, None, None),
        (evals((0, 1.0), (1, 0.3), (2, 0.2)), 2, None, TRANSFER),
        (evals((0, 1.0), (1, 0.3), (2, 0.2)), None, None, None),  # k=None: transfer rule off
        (evals((0, 1.0), (1, 0.9)) + cap(1, 0.05, 0.31), 2, 0.3, CAPABILITY),  # any benchmark past the limit
        (evals((0, 1.0), (1, 0.9)) + cap(1, 0.05, 0.30), 2, 0.3, None),  # at the limit is not past it
        (evals((0, 1.0), (1, 0.9)) + cap(1, 0.5), 2, None, None),  # limit None: capability rule off
        (evals((0, 1.0), (1, 0.9), (2, 0.9)) + cap(1, 0.5) + cap(2, 0.1), 2, 0.3, None),  # only the latest counts
        (evals((0, 1.0), (1, 0.9), (2, 0.9)) + cap(1, 0.1) + cap(2, 0.4), 2, 0.3, CAPABILITY),
        (evals((0, 1.0), (1, 0.3), (2, 0.2)) + cap(2, 0.9), 2, 0.3, TRANSFER),  # transfer wins: the answer is known
        (evals((0, 1.0), (1, 0.9)) + [{"kind": "capability", "step": 1, "rel_degradation": None}], 2, 0.3, None),
        ([{"kind": "train", "step": 1, "train_loss": 0.1}] + evals((0, 0.1)), 1, None, TRANSFER),
    ],
)
def test_should_stop(rows, k, limit, expected):
    assert should_stop(rows, threshold=0.5, k=k, max_rel_degradation=limit) == expected


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k=0"):
        should_stop(evals((0, 0.1)), 0.5, 0, None)


def test_early_stop_is_off_by_default_and_on_in_the_fast_preset():
    from orchestrator.config import compose_config

    default, fast = compose_config([]), compose_config(["sweep=fast"])
    assert default.sweep.early_stop.enabled is False
    assert fast.sweep.early_stop.enabled is True and fast.sweep.early_stop.k >= 1
    assert list(fast.sweep.lrs) == list(default.sweep.lrs) and fast.sweep.max_steps == default.sweep.max_steps


@pytest.mark.parametrize("override, message", [("sweep.early_stop.k=0", "early_stop.k=0"),
                                               ("sweep.early_stop.max_rel_degradation=-0.1", "max_rel_degradation"),
                                               ("sweep.early_stop.wait_below=1.5", "wait_below")])
def test_bad_early_stop_values_are_refused(override, message):
    from orchestrator.config import compose_config
    from orchestrator.schema import ConfigError

    with pytest.raises(ConfigError, match=message):
        compose_config(["sweep=fast", override])


def _trial(max_steps=64):
    from eval.metrics import checkpoint_steps

    return {"name": "lr0.003_seed0", "setting": "s", "lr": 3e-3, "seed": 0, "max_steps": max_steps,
            "checkpoint_steps": checkpoint_steps(max_steps)}


def test_analysis_counts_a_converged_early_stop_as_converged_and_complete():
    from eval.analysis import analyze_trial, summarize_seeds
    from eval.summary import summarize_trial

    rows = evals((0, 1.0), (1, 0.9), (2, 0.8), (4, 0.4), (8, 0.2)) + [
        {"kind": "stop", "step": 8, "reason": TRANSFER, "steps_trained": 8}]
    t = analyze_trial(_trial(), rows, 0.5)
    assert t.converged and t.steps_to_transfer == 4 and t.missing_steps == [] and t.stop_reason == TRANSFER
    assert summarize_seeds([t]).median == 4
    s = summarize_trial(_trial(), rows, 0.5)
    assert s["stopped_early"] and s["stop_reason"] == TRANSFER and s["stop_step"] == 8 and s["steps_to_transfer"] == 4


def test_analysis_leaves_out_an_unconverged_early_stop():
    from eval.analysis import analyze_trial, summarize_seeds

    rows = evals((0, 1.0), (1, 0.9), (2, 0.8)) + cap(2, 0.5) + [{"kind": "stop", "step": 2, "reason": CAPABILITY}]
    t = analyze_trial(_trial(), rows, 0.5)
    assert not t.converged and t.lower_bound == 2 and t.missing_steps == []
    s = summarize_seeds([t])
    assert s.failed_seeds == [0] and s.median is None


def test_a_trial_without_a_stop_row_still_reports_missing_checkpoints():
    from eval.analysis import analyze_trial
    from eval.summary import summarize_trial

    rows = evals((0, 1.0), (1, 0.9), (2, 0.8))
    assert analyze_trial(_trial(), rows, 0.5).missing_steps == [4, 8, 16, 32, 64]
    assert summarize_trial(_trial(), rows, 0.5)["stopped_early"] is False


def test_cut_after_stop_keeps_the_curve_up_to_the_stop(tmp_path):
    from eval.runfiles import read_jsonl, write_jsonl
    from orchestrator.run.trial import cut_after_stop

    rows = evals((0, 1.0), (1, 0.3), (2, 0.2), (4, 0.1)) + [{"kind": "train", "step": s, "train_loss": 1.0}
                                                           for s in (1, 2, 3, 4)]
    write_jsonl(tmp_path / "metrics.jsonl", rows)
    for step in (0, 1, 2, 4):
        (tmp_path / "adapters" / f"step_{step:05d}").mkdir(parents=True)
        (tmp_path / "adapters" / f"step_{step:05d}" / "adapter_config.json").write_text("{}")
        write_jsonl(tmp_path / "samples" / f"step_{step:05d}.jsonl", [{"step": step}])
    cut_after_stop(tmp_path, 2)
    assert sorted({r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")}) == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["step_00000", "step_00001", "step_00002"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [f"step_{s:05d}.jsonl" for s in (0, 1, 2)]


def test_stop_state_fires_once_and_cuts_the_curve_there():
    from eval.stopping import StopState

    st = StopState(0.5, k=1, max_rel_degradation=None)
    st.update(evals((0, 1.0)), 0)
    assert not st.fired and st.keeps(64)
    st.update(evals((0, 1.0), (16, 0.4)), 16)
    assert st.fired and (st.step, st.reason) == (16, TRANSFER)
    st.update(evals((0, 1.0), (16, 0.4), (32, 0.1)), 32)  # a later firing does not move the stop
    assert st.step == 16 and st.keeps(16) and not st.keeps(32)
    st.close(last_step=20, max_steps=64)
    assert st.fired and st.step == 16


def test_stop_state_drops_a_rule_that_fired_after_the_last_step():
    from eval.stopping import StopState

    st = StopState(0.5, k=1, max_rel_degradation=None)
    st.update(evals((0, 1.0), (32, 0.4)), 32)
    st.close(last_step=64, max_steps=64)  # the trainer had already finished: nothing was saved
    assert not st.fired and st.keeps(64)
    st.update(evals((0, 1.0), (32, 0.4), (64, 0.2)), 64)  # closed: evaluations after training change nothing
    assert not st.fired


@pytest.mark.parametrize(
    "k, points, expected",
    [
        (1, [(0, 1.0), (1, 0.95)], False),  # k=1: the curve has not moved, keep training while it is sampled
        (1, [(0, 1.0), (8, 0.88)], True),  # k=1: it has started to fall, the pending checkpoint may transfer
        (1, [], False),
        (2, [(0, 1.0), (1, 0.9)], False),  # nothing under the threshold yet
        (2, [(0, 1.0), (1, 0.4)], True),  # one in, the pending one can complete the rule
        (3, [(0, 1.0), (1, 0.4)], False),
        (3, [(0, 1.0), (1, 0.4), (2, 0.3)], True),
        (None, [(0, 1.0), (1, 0.4)], False),  # transfer rule off
    ],
)
def test_stop_state_waits_only_when_the_pending_checkpoint_can_fire(k, points, expected):
    from eval.stopping import StopState

    assert StopState(0.5, k=k, max_rel_degradation=0.3, wait_below=0.9).wait_for_pending(evals(*points)) is expected


def test_k1_never_waits_without_wait_below():
    from eval.stopping import StopState

    assert not StopState(0.5, k=1, max_rel_degradation=None).wait_for_pending(evals((0, 1.0), (8, 0.3)))
