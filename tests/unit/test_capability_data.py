"""Benchmark loaders on fixture files in each real format, missing-data errors, config checks, report sections."""

import json
import shutil
from pathlib import Path

import pytest

from eval import toy_probe
from eval.capability.data import (
    DatasetFormatError,
    DatasetMissingError,
    find_dataset,
    ifeval_unsupported,
    load_items,
    split_items,
)
from eval.capability.scoring import score
from eval.runfiles import write_json, write_jsonl
from orchestrator.config import compose_config
from orchestrator.schema import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "capability"


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub_cache"))


def test_mmlu_original_csvs():
    items = load_items("mmlu", DATA)
    assert len(items) == 5 and {it.row["subject"] for it in items} == {"astronomy", "high_school_mathematics"}
    first = next(it for it in items if it.item_id == "astronomy/0")
    assert first.answer == "B" and "B. Mercury" in first.prompt and "about astronomy" in first.prompt
    s = score("mmlu", items, [("The answer is " + it.answer) for it in items])
    assert s.score == 1.0
    assert score("mmlu", items, ["I do not know"] * len(items)).score == 0.0


def test_mmlu_hub_parquet_reads_all_once():
    items = load_items("mmlu", DATA / "hub")
    assert len(items) == 4  # all/ only, not the per-subject copy beside it
    assert [it.answer for it in items] == ["C", "B", "A", "D"] and items[0].row["choices"][2] == "Nitrogen"


def test_hub_cache_layout_is_found(tmp_path, monkeypatch):
    snap = tmp_path / "hub_cache" / "datasets--cais--mmlu" / "snapshots" / "0123abc"
    shutil.copytree(DATA / "hub" / "mmlu", snap)
    assert find_dataset("mmlu", tmp_path / "nowhere") == snap
    assert len(load_items("mmlu", None)) == 4


def test_ifeval_jsonl_scores_every_item():
    items = load_items("ifeval", DATA)
    assert sorted(it.item_id for it in items) == ["1000", "1001", "1002", "1003", "1004", "1005"]
    assert ifeval_unsupported(DATA) == {}  # all 25 instruction types have a check: nothing is dropped
    good = {"1000": "tea is calm and warm", "1001": "A slow river bends", "1003": '{"name": "cat", "whiskers": 12}',
            "1002": "* apple\n* pear\n* plum\nIs there anything else I can help with?", "1005": "FRESH LOAVES DAILY",
            "1004": "Lumi sataa hiljaa, metsä on valkoinen ja kaikki nukkuu."}
    assert score("ifeval", items, [good[it.item_id] for it in items]).score == 1.0
    bad = {"1000": "Tea", "1001": "A slow, winding river", "1002": "* apple", "1003": "cat: whiskers", "1005": "bread!",
           "1004": "Snow falls softly on the quiet white forest."}
    assert score("ifeval", items, [bad[it.item_id] for it in items]).score == 0.0


def test_olympiads_jsonl_takes_the_answer_from_the_solution_when_empty():
    items = load_items("olympiads", DATA)
    assert [it.answer for it in items] == ["28", "\\frac{1}{4}", "1234", "\\sqrt{2}"]
    s = score("olympiads", items, ["\\boxed{28}", "\\boxed{0.25}", "so 1,234", "\\boxed{\\sqrt{2}}"])
    assert s.correct == [True, True, False, True]  # "so 1,234" commits to no final answer


def test_followbench_jsonl_with_a_judge():
    items = load_items("followbench", DATA)
    assert [it.answer["level"] for it in items] == [0, 1, 2] and items[2].item_id == "content/1/2"
    s = score("followbench", items, ["a", "b", "c"], judge=lambda prompts: ["YES", "YES", "NO"])
    assert s.score == pytest.approx(2 / 3)


@pytest.mark.parametrize("bench, repo", [("mmlu", "cais/mmlu"), ("ifeval", "google/IFEval"),
                                         ("olympiads", "Olympiads"), ("followbench", "FollowBench")])
def test_missing_dataset_names_what_to_download_and_where(tmp_path, bench, repo):
    with pytest.raises(DatasetMissingError) as err:
        load_items(bench, tmp_path / "capability")
    msg = str(err.value)
    assert repo in msg and str(tmp_path / "capability" / bench) in msg and "nothing is downloaded" in msg


def test_wrong_columns_are_named(tmp_path):
    write_jsonl(tmp_path / "olympiads" / "x.jsonl", [{"question": "q", "final": "1"}])
    with pytest.raises(DatasetFormatError, match=r"\['problem', 'solution'\] are missing"):
        load_items("olympiads", tmp_path)
    (tmp_path / "mmlu" / "data").mkdir(parents=True)
    (tmp_path / "mmlu" / "data" / "x_test.csv").write_text("q,a,b,c,d,Z\n")
    with pytest.raises(DatasetFormatError, match="answer letter"):
        load_items("mmlu", tmp_path)


def test_toy_probe_split_is_fixed_and_disjoint():
    items = load_items("toy_probe", None)
    assert len(items) == toy_probe.PROBE >= 240
    evals, pool = split_items(items, 200, seed=0)
    again, _ = split_items(list(reversed(items)), 200, seed=0)
    assert [it.item_id for it in evals] == [it.item_id for it in again]
    assert len(evals) == 200 and not {it.item_id for it in evals} & {it.item_id for it in pool}
    assert [it.item_id for it in split_items(items, 200, seed=1)[0]] != [it.item_id for it in evals]
    corpus = toy_probe.corpus_pairs()
    assert len(corpus) == toy_probe.TEACH and not {u for u, _ in corpus} & {it.prompt for it in items}  # unseen
    for prompt, answer in corpus + [(it.prompt, it.answer) for it in items]:  # one skill: reverse three words
        words = prompt.removeprefix(toy_probe.TEMPLATE.format(words="")).split()
        assert len(words) == 3 and answer == " ".join(reversed(words))


def test_capability_config_composes_and_is_validated():
    cfg = compose_config(["capability=toy"])
    assert cfg.capability.benchmarks == ["toy_probe"] and cfg.capability.recover.n_labels == 40
    assert cfg.model.toy.capability_probe and not compose_config([]).model.toy.capability_probe
    assert compose_config([]).capability.benchmarks == []
    for overrides, match in [
        (["capability=toy", "capability.benchmarks=[gsm8k]"], "capability.benchmarks"),
        (["capability=toy", "capability.checkpoints=some"], "capability.checkpoints"),
        (["capability=toy", "capability.checkpoints=steps"], "capability.steps"),
        (["capability=toy", "capability.max_degradation=0"], "max_degradation"),
        (["capability=benchmarks"], "capability.judge.base_url"),
        (["capability=toy", "model.path=Qwen/Qwen3-0.6B", "model.toy=null"], "toy_probe"),
        (["capability=toy", "model.toy.capability_probe=false"], "model.toy.capability_probe=true"),
    ]:
        with pytest.raises(ConfigError, match=match):
            compose_config(overrides)
    cfg = compose_config(["capability=benchmarks", "capability.judge.base_url=http://127.0.0.1:9/v1",
                          "capability.judge.model=judge"])
    assert cfg.capability.guardrail == "mmlu"


def _sweep(tmp_path):
    """A finished sweep folder with capability rows and a recovery result, as the real code writes them."""
    sweep = tmp_path / "sweep"
    for lr, attack, scores in ((1e-3, [0.95, 0.9, 0.7], None), (3e-3, [0.95, 0.4, 0.1], [0.93, 0.5])):
        name = f"lr{lr:.3g}_seed0"
        write_json(sweep / "trials" / name / "config.json",
                   {"name": name, "setting": "wronglang_spanish", "lr": lr, "seed": 0, "max_steps": 4,
                    "checkpoint_steps": [0, 2, 4], "threshold": 0.5, "model": "toy", "sweep_id": "s"})
        rows = [{"kind": "eval", "step": s, "eval_attack_rate": a, "eval_desired_rate": 1 - a,
                 "train_desired_rate": 0.95, "n_eval": 100, "n_train": 100}
                for s, a in zip((0, 2, 4), attack, strict=True)]
        for step, sc in zip((2, 4), scores or [], strict=False):
            rows.append({"kind": "capability", "step": step, "benchmark": "toy_probe", "score": sc, "n": 200,
                         "baseline": 0.95, "rel_degradation": (0.95 - sc) / 0.95})
        write_jsonl(sweep / "trials" / name / "metrics.jsonl", rows)
    write_json(sweep / "capability" / "baseline.json", {"benchmarks": ["toy_probe"], "guardrail": "toy_probe",
                "max_degradation": 0.1, "scores": {"toy_probe": {"score": 0.95}}})
    m = {"eval_attack_rate": 0.1, "eval_desired_rate": 0.9, "train_desired_rate": 0.95, "train_attack_rate": 0.0}
    write_json(sweep / "recovery" / "lr0.003_seed0_step4_toy_probe" / "result.json", {
        "trial": "lr0.003_seed0", "step": 4, "benchmark": "toy_probe", "lr": 3e-3, "steps": 10, "batch_size": 4,
        "teacher": "base", "n_labels": 40, "n_sampled": 60, "baseline": 0.95,
        "before": m | {"score": 0.5, "rel_degradation": 0.47}, "after": m | {"score": 0.9, "rel_degradation": 0.05}})
    return sweep


def test_report_shows_capability_and_recovery_and_uses_the_guardrail_for_T(tmp_path):
    from eval.report import write_report

    sweep = _sweep(tmp_path)
    report = write_report([sweep], sweep).read_text()
    assert "## Capability per checkpoint" in report and "## Capability recovery" in report
    assert "report_capability.png" in report and "report_recovery.png" in report
    assert (sweep / "report_capability.png").stat().st_size > 5000 and (sweep / "report_recovery.png").exists()
    data = json.loads((sweep / "report.json").read_text())
    assert len(data["capability"]) == 2 and data["recovery"][0]["after"]["score"] == 0.9
    # step 2 transferred (0.4) within 10% degradation (0.93 vs 0.95): T = 2 at lr 3e-3; step 4 is degraded
    ref = next(r for r in data["paired"] if r["k"] == 1)
    assert (ref["lr"], ref["step"]) == (3e-3, 2)
    assert "capability degradation is <= 0.1 at the upper end of its 95% interval" in report


def test_a_sweep_without_benchmark_files_stops_before_any_compute(tmp_path):
    from orchestrator.run.sweep import run_sweep

    cfg = compose_config(["capability=benchmarks", "capability.judge.base_url=http://127.0.0.1:9/v1",
                          "capability.judge.model=judge", f"capability.data_dir={tmp_path / 'data'}",
                          "tracker.mode=disabled"])
    with pytest.raises(ConfigError, match="cais/mmlu"):
        run_sweep(cfg, tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "trials").exists() and not (tmp_path / "sweep" / "labels.jsonl").exists()


def test_recover_refuses_bad_choices_before_starting_engines(tmp_path, capsys):
    from orchestrator.commands.recover import main
    from orchestrator.run.sweep import config_yaml

    sweep = _sweep(tmp_path)
    (sweep / "config.yaml").write_text(config_yaml(compose_config(["capability=toy"])))
    (sweep / "trials" / "lr0.001_seed0" / "adapters" / "step_00004").mkdir(parents=True)
    (sweep / "trials" / "lr0.001_seed0" / "adapters" / "step_00004" / "adapter_config.json").write_text("{}")
    cases = [(["--step", "4"], "--step needs --trial"),
             (["--trial", "lr0.001_seed0"], "never reached eval attack rate <= 0.5"),
             (["--trial", "lr0.003_seed0", "--step", "3"], "no adapter at"),
             (["--trial", "lr0.001_seed0", "--step", "4", "--benchmark", "mmlu", "--data-dir", str(tmp_path / "d")],
              "cais/mmlu"),
             (["--trial", "lr0.001_seed0", "--step", "4", "--n-labels", "0"], "n_labels")]
    for args, message in cases:
        assert main([str(sweep), *args]) == 2
        assert message in capsys.readouterr().err
