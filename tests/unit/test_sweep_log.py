"""The sweep's log file (issue 27: sweep.log held one matplotlib line): the driver's notes, tables and errors go to
<sweep>/sweep.log as well as the terminal, and vLLM's start-up messages go to the file instead of the terminal."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import compose_config
from orchestrator.console.sweep_log import FileOnlyStream, say, say_to_file, sweep_logging
from orchestrator.schema import ConfigError
from workers.sample.engine_log import ENGINE_LOG_ENV, VERBOSE_ENV, route_engine_logs

ROOT = Path(__file__).resolve().parents[2]


def test_notes_go_to_the_terminal_and_the_file_tables_to_the_file(tmp_path, capsys):
    with sweep_logging(tmp_path) as path:
        assert os.environ[ENGINE_LOG_ENV] == str(path)
        say("[sweep] a note")
        say_to_file("a table\nof two lines")
        stream = FileOnlyStream()
        stream.write("part one, ")
        stream.write("part two\n")
    assert ENGINE_LOG_ENV not in os.environ  # only for the sweep's lifetime
    assert capsys.readouterr().out == "[sweep] a note\n"
    text = (tmp_path / "sweep.log").read_text()
    assert "[sweep] a note" in text and "a table\nof two lines" in text and "part one, part two" in text
    say("after the sweep")  # the handler is gone with the block
    assert "after the sweep" not in (tmp_path / "sweep.log").read_text()


def test_an_error_that_ends_the_sweep_is_in_its_log(tmp_path, monkeypatch):
    """A refusal raised inside run_sweep (online W&B without a key) lands in sweep.log with its traceback."""
    from orchestrator.run.sweep import run_sweep

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_config(["tracker.mode=online", f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        run_sweep(cfg, tmp_path / "sw")
    text = (tmp_path / "sw" / "sweep.log").read_text()
    assert "error: ConfigError:" in text and "WANDB_API_KEY" in text and "Traceback" in text


def test_the_progress_table_is_written_to_the_log(tmp_path):
    from orchestrator.console.progress import ProgressTable

    (tmp_path / "trials").mkdir()
    terminal = io.StringIO()
    with sweep_logging(tmp_path):
        table = ProgressTable(tmp_path, ["lr0.001000_seed0"], 8, interval_s=3600, stream=terminal, poll_s=0,
                              tty=True, log_stream=FileOnlyStream())
        table.refresh()
        table.on_experiment_end([])
    log = (tmp_path / "sweep.log").read_text()
    assert log.count("lr0.001000_seed0") == 2 and "\x1b[" not in log  # whole tables, no cursor movement
    assert "lr0.001000_seed0" in terminal.getvalue()


@pytest.mark.parametrize("env, routed", [({}, False), ({VERBOSE_ENV: "1"}, False), ({VERBOSE_ENV: "0"}, True)])
def test_vllm_loggers_write_to_the_sweep_log_unless_asked(tmp_path, env, routed):
    path = tmp_path / "sweep.log"
    environ = {ENGINE_LOG_ENV: str(path)} | env if env or routed else {}
    vllm_log = logging.getLogger("vllm")
    saved = (list(vllm_log.handlers), vllm_log.propagate, vllm_log.level)
    try:
        assert route_engine_logs(environ) == (str(path) if routed else None)
        if routed:
            logging.getLogger("vllm.engine").warning("engine start-up message")
            assert "engine start-up message" in path.read_text()
            assert json.loads(Path(environ["VLLM_LOGGING_CONFIG_PATH"]).read_text())["loggers"]["vllm"]
    finally:
        vllm_log.handlers[:], vllm_log.propagate = saved[0], saved[1]
        vllm_log.setLevel(saved[2])


def test_vllms_own_logger_in_a_fresh_engine_process_follows_the_route(tmp_path):
    """vLLM's engine processes configure their loggers from a LoggingConfig whose defaults read
    VLLM_LOGGING_CONFIG_PATH (as LLM() and the engine core do): set by route_engine_logs, it sends their warnings
    to the file and not to the process's terminal."""
    child = ("from vllm.config.logging import LoggingConfig; from vllm.logger import configure_logging, init_logger; "
             "configure_logging(LoggingConfig()); init_logger('vllm.engine_core').warning('engine core warning')")
    code = ("from workers.sample.engine_log import route_engine_logs\nroute_engine_logs()\n"
            f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}], check=True)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{ENGINE_LOG_ENV: str(tmp_path / "sweep.log")})
    env.pop(VERBOSE_ENV, None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "engine core warning" not in proc.stdout + proc.stderr
    assert "engine core warning" in (tmp_path / "sweep.log").read_text()
