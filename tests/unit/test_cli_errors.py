"""One way to fail (issue 27 items 1, 3, 4): every command refuses a user's mistake with one line naming the fix and
exit status 2, never a traceback; --help works on every command; `--cfg job` prints the config wherever one is
composed; a closed pipe ends quietly. Each case runs `python -m orchestrator ...` in a subprocess; none starts an
engine (a few seconds each).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.errors import UserError
from eval.report import NotASweepError
from orchestrator.__main__ import COMMANDS
from orchestrator.config_keys import check_known_keys, did_you_mean, unknown_path
from workers.errors import ConfigError
from workers.labels.endpoint import EndpointError
from workers.labels.prompts import DataError
from workers.models.real_models import ModelPrepError
from workers.train.state import ResumeError

ROOT = Path(__file__).resolve().parents[2]
TYPO = "setting=wronglang_spansh"
SUGGESTION = "did you mean wronglang_spanish?"

# (case id, command line after `python -m orchestrator`, exit status, text on stderr)
REFUSALS = [
    ("sweep typo", ["sweep", TYPO], 2, SUGGESTION),
    ("sweep typo dry run", ["sweep", TYPO, "dry_run=true"], 2, SUGGESTION),
    ("sweep + key dry run", ["sweep", "+sweep.lr=[1e-3]", "dry_run=true"], 2, "did you mean sweep.lrs?"),
    ("sweep key without +", ["sweep", "sweep.lr=[1e-3]"], 2, "did you mean sweep.lrs?"),
    ("sweep -m", ["sweep", "-m", "setting=animal_flag,allcaps_refusal", "dry_run=true"], 2, "sweep.lrs"),
    ("plan typo", ["plan", TYPO], 2, SUGGESTION),
    ("plan + key", ["plan", "+train.lora_rnak=8"], 2, "did you mean train.lora_rank?"),
    ("labels typo", ["labels", TYPO], 2, SUGGESTION),
    ("probe typo", ["probe", TYPO], 2, SUGGESTION),
    ("submit typo", ["submit", TYPO, "--dry-run"], 2, SUGGESTION),
    ("toy typo", ["toy", TYPO], 2, SUGGESTION),
    ("train typo", ["train", "--lr", "1e-3", "--out", "/tmp/x", TYPO], 2, SUGGESTION),
    ("override grammar", ["plan", "sweep.lrs=[1e-3"], 2, "an override is key=value"),
    ("status of a non-sweep", ["status", "/nonexistent/sweep"], 2, "error:"),
    ("report of a non-sweep", ["report", "/nonexistent/sweep"], 2, "error:"),
]


def run_cli(args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env | {"PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("case, args, code, message", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_a_users_mistake_is_one_line_and_exit_2(case, args, code, message, tmp_path):
    proc = run_cli(args, tmp_path)
    assert proc.returncode == code, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_on_every_command(command, tmp_path):
    proc = run_cli([command, "--help"], tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) >= 3, proc.stdout  # a description, not a bare usage line


def test_train_help_describes_its_options(tmp_path):
    out = run_cli(["train", "--help"], tmp_path).stdout
    assert "the learning rate" in out and "Hydra override" in out


@pytest.mark.parametrize("command", ["plan", "labels", "probe", "submit", "toy", "train", "sweep"])
def test_cfg_job_prints_the_composed_config(command, tmp_path):
    proc = run_cli([command, "--cfg", "job", "sweep.max_steps=7"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max_steps: 7" in proc.stdout and "lrs:" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # printed, nothing run


def test_closed_pipe_ends_quietly(tmp_path):
    """`status DIR --json | head`: the reader is gone before the command writes; no BrokenPipeError traceback."""
    from synthetic_sweep import make_sweep

    from eval.runfiles import write_text_atomic
    from orchestrator.config import compose_config
    from orchestrator.run.sweep import config_yaml

    sweep = make_sweep(tmp_path, "alpha")
    write_text_atomic(sweep / "config.yaml", config_yaml(compose_config([])))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "status", str(sweep), "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    proc.stdout.close()  # the reader closes the pipe (head has read its lines)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err[-2000:]
    assert err == "", err[-2000:]


@pytest.mark.parametrize("cls", [ConfigError, DataError, EndpointError, ModelPrepError, ResumeError, NotASweepError])
def test_every_user_error_shares_one_base(cls):
    assert issubclass(cls, UserError)


@pytest.mark.parametrize("path, suggestion", [
    ("sweep.lr", "sweep.lrs"), ("train.lora_rnak", "train.lora_rank"), ("setting.grader.kindd", "setting.grader.kind"),
    ("sweeps.lrs", "sweep"), ("model.toy.seq_lne", "model.toy.seq_len")])
def test_unknown_key_names_the_closest_real_key(path, suggestion):
    err = unknown_path(path)
    assert err is not None and f"did you mean {suggestion}?" in str(err)


@pytest.mark.parametrize("path", ["sweep.lrs", "model.chat_template_kwargs.enable_thinking", "setting.grader.kind"])
def test_known_keys_and_free_dicts_pass(path):
    assert unknown_path(path) is None


def test_a_stray_key_from_yaml_is_refused():
    from omegaconf import OmegaConf

    from orchestrator.config import compose_dict

    dcfg = compose_dict([])
    check_known_keys(dcfg)  # every shipped default composes clean
    raw = OmegaConf.create(OmegaConf.to_container(dcfg))  # as a YAML file would give it: untyped
    raw.sample.temperatur = 0.5
    with pytest.raises(ConfigError, match="did you mean sample.temperature"):
        check_known_keys(raw)


def test_did_you_mean_stays_quiet_when_nothing_is_close():
    assert did_you_mean("qqqq", ["lrs", "seeds"]) == ""
