"""Every shipped config composes, and bad values are refused before any work."""

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import available, compose_config, load_setting
from orchestrator.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("group", ["setting", "model", "sweep", "train", "sample", "tracker"])
def test_every_shipped_yaml_composes(group):
    names = available(group)
    assert names, f"conf/{group}/ is empty"
    for name in names:
        cfg = compose_config([f"{group}={name}"])
        assert cfg.cache_dir.startswith("/")


def test_default_config_matches_the_note():
    cfg = compose_config([])
    assert cfg.setting.name == "wronglang_spanish" and cfg.model.name == "toy"
    assert cfg.train.batch_size == 32 and cfg.train.lora_rank == 8 and cfg.train.optimizer == "adam"
    lrs = sorted(cfg.sweep.lrs)
    assert len(lrs) >= 4 and lrs[-1] / lrs[0] >= 30
    assert load_setting("wronglang_spanish").grader.kind == "language"


@pytest.mark.parametrize(
    "override, message",
    [
        ("sweep.lrs=[]", "sweep.lrs is empty"),
        ("sweep.lrs=[1e-3,-1e-4]", "positive finite"),
        ("sweep.lrs=[0.0]", "positive finite"),
        ("sweep.lrs=[1e-3,1e-3]", "repeats"),
        ("sweep.seeds=[-1]", "sweep.seeds[0]=-1: must be >= 0"),
        ("sweep.seeds=[0,0]", "repeats"),
        ("sweep.max_steps=0", "max_steps"),
        ("sweep.threshold=1.5", "threshold"),
        ("train.batch_size=0", "batch_size"),
        ("train.micro_batch_size=5", "divide"),
        ("train.lora_rank=0", "lora_rank"),
        ("train.optimizer=sgd", "adam"),
        ("sample.n_eval_prompts=0", "n_eval_prompts"),
        ("tracker.mode=sometimes", "tracker.mode"),
        ("setting.eval_fraction=1.0", "eval_fraction"),
        ("setting.grader.kind=regex", "setting.grader.kind='regex': must be one of language"),
        ("setting.train_template=no placeholder", "{question}"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{").replace("}", r"\}")):
        compose_config([override])


def run_cli(*args, env_extra=None):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_unknown_setting_exits_nonzero_and_lists_settings(tmp_path):
    out = run_cli("sweep", "setting=no_such_setting", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0
    assert "no_such_setting" in out.stderr and "wronglang_spanish" in out.stderr
    assert not (tmp_path / "run" / "labels.jsonl").exists()


@pytest.mark.parametrize("lrs, message", [("[abc]", "abc"), ("[1e-3,-1e-4]", "positive finite"), ("[0]", "positive")])
def test_bad_lr_on_the_command_line_exits_before_work(tmp_path, lrs, message):
    out = run_cli("sweep", f"sweep.lrs={lrs}", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_unknown_command_prints_usage():
    out = run_cli("swep")
    assert out.returncode == 2 and "sweep" in out.stderr


def test_auto_dtype_is_float32_on_a_cpu_that_emulates_bf16():
    """model=smollm2_135m trained in bf16 on an AVX2 CPU: torch emulates bf16 matmuls there (70x slower than
    float32, measured), and a 2 LR x 8 step CI sweep ran past its 30 min timeout. model.dtype=auto picks float32 on
    such a CPU and bfloat16 on GPUs or CPUs with native bf16; an explicit dtype is kept."""
    from orchestrator.config import auto_dtype

    assert auto_dtype(0, {"avx2", "fma"}) == "float32"
    assert auto_dtype(0, {"avx512f", "avx512_bf16"}) == auto_dtype(0, {"amx_bf16"}) == "bfloat16"
    assert auto_dtype(8, {"avx2"}) == "bfloat16"
    cpu = compose_config(["model=smollm2_135m"]).model.dtype
    assert cpu == auto_dtype(0) and cpu in ("float32", "bfloat16")
    assert compose_config(["model=smollm2_135m", "cluster=slurm"]).model.dtype == "bfloat16"
    assert compose_config(["model=smollm2_135m", "model.dtype=bfloat16"]).model.dtype == "bfloat16"

