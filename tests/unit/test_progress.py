"""The live progress table: one row per trial from the run files, a heartbeat between checkpoints, redrawn in place
on a terminal (a pseudo-TTY here) and printed as whole tables plus state changes on a log, at 12 trials."""

import io
import os
import pty
import re
import struct
import termios
import threading
import time
from fcntl import ioctl

import pytest

from eval.heartbeat import read_heartbeat, write_heartbeat
from eval.runfiles import append_jsonl, trial_name, write_json
from orchestrator.console.progress import ProgressTable
from orchestrator.console.progress_table import WIDTH, LiveTable, TrialRow, format_row, format_table, trial_row

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
NAMES = [trial_name(lr, seed) for lr in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3) for seed in (0, 1)]  # 12 trials


@pytest.mark.parametrize("row, line", [
    (TrialRow("lr0.001_seed0", "pending", None, 64),
     "lr0.001_seed0              pending              -          -            -"),
    (TrialRow("lr0.001_seed0", "training", 37, 256, steps_per_s=1 / 33, attack_rate=0.91, eval_step=32, beat_age_s=4),
     "lr0.001_seed0              training        37/256    33 s/st     0.91 @32   4s ago"),
    (TrialRow("lr0.01_seed1", "training", 12, 64, steps_per_s=2.345, beat_age_s=300),
     "lr0.01_seed1               training         12/64   2.3 st/s            -   5m ago"),
    (TrialRow("lr0.01_seed1", "evaluating", 64, 64, attack_rate=0.5, eval_step=32),
     "lr0.01_seed1               evaluating       64/64          -     0.50 @32"),
    (TrialRow("lr1e-05_seed12", "stopped", 16, 64, attack_rate=0.12, eval_step=16),
     "lr1e-05_seed12             stopped          16/64          -     0.12 @16"),
    (TrialRow("lr0.0003_seed0", "failed", 3, 64),
     "lr0.0003_seed0             failed            3/64          -            -"),
])
def test_format_row(row, line):
    assert format_row(row) == line


def test_format_table_has_a_title_a_header_and_one_row_per_trial():
    rows = [TrialRow(n, s, None, 64) for n, s in zip(NAMES, ["done", "training", "pending"] * 4, strict=True)]
    lines = format_table(rows, elapsed_s=125).splitlines()
    assert lines[0] == "[sweep   125s] 12 trials: 4 pending, 4 training, 4 done"
    assert lines[1].split() == ["trial", "state", "step", "speed", "attack", "@step", "beat"]
    assert [line.split()[0] for line in lines[2:]] == NAMES
    assert max(map(len, lines)) <= WIDTH


def test_heartbeat_is_written_at_most_every_few_seconds_and_on_a_phase_change(tmp_path):
    trial = tmp_path / "trial"
    assert read_heartbeat(trial) is None
    assert write_heartbeat(trial, 1, max_steps=8, now=100.0)
    assert not write_heartbeat(trial, 2, max_steps=8, now=102.0)  # under 5 s later: skipped
    assert read_heartbeat(trial)["step"] == 1
    assert write_heartbeat(trial, 4, max_steps=8, now=106.0)
    beat = read_heartbeat(trial)
    assert (beat["step"], beat["time"], beat["phase"]) == (4, 106.0, "training")
    assert beat["steps_per_s"] == pytest.approx(3 / 6)  # since this process's first beat
    assert write_heartbeat(trial, 4, phase="evaluating", max_steps=8, now=106.5)  # phase change: at once
    assert read_heartbeat(trial)["phase"] == "evaluating"
    (trial / "heartbeat.json").write_text('{"step": 4, "ti')  # never written like this (atomic), but read safely
    assert read_heartbeat(trial) is None


def write_trial(sweep, name, ckpt_steps=(), beat=None, result=None):
    trial = sweep / "trials" / name
    write_json(trial / "config.json", {"name": name})
    for step in ckpt_steps:
        append_jsonl(trial / "metrics.jsonl", {"step": step, "kind": "eval", "eval_attack_rate": 1 / (step + 1)})
    if beat is not None:
        write_json(trial / "heartbeat.json", {"step": beat[0], "time": time.time() - 2, "phase": beat[1],
                                              "steps_per_s": 0.25, "max_steps": 64})
    if result is not None:
        write_json(trial / "result.json", result)


def test_trial_row_reads_state_step_and_rate_from_the_files(tmp_path):
    write_trial(tmp_path, "a", (0, 1, 2, 4), beat=(7, "training"))
    write_trial(tmp_path, "b", (0, 1, 2, 4, 8), beat=(8, "evaluating"))
    write_trial(tmp_path, "c", (0, 64), beat=(64, "evaluating"), result={"stopped_early": False})
    write_trial(tmp_path, "d", (0, 16), result={"stopped_early": True, "stop_step": 16})
    rows = {n: trial_row(tmp_path / "trials" / n, 64) for n in "abcde"}
    a = rows["a"]
    assert (a.state, a.step, a.eval_step, a.attack_rate, a.steps_per_s) == ("training", 7, 4, 0.2, 0.25)
    assert 1 < a.beat_age_s < 30  # the heartbeat's step, beyond the last checkpoint's
    assert (rows["b"].state, rows["b"].step, rows["b"].beat_age_s) == ("evaluating", 8, None)
    assert (rows["c"].state, rows["c"].step, rows["c"].steps_per_s) == ("done", 64, None)
    assert (rows["d"].state, rows["d"].step) == ("stopped", 16)
    assert (rows["e"].state, rows["e"].step, rows["e"].attack_rate) == ("pending", None, None)


class Trial:
    """What Ray Tune hands a callback about a trial: its config."""

    def __init__(self, name):
        lr, seed = name.removeprefix("lr").split("_seed")
        self.config = {"trial": {"members": [{"lr": float(lr), "seed": int(seed)}]}}


def run_events(sweep, stream, tty):
    """Drive the Tune callback through a 12-trial sweep's life, with the trial folders written as trials would."""
    table = ProgressTable(sweep, NAMES, 64, interval_s=3600, stream=stream, poll_s=0, tty=tty)
    table.table.redraw_s = 0  # every event redraws (a real terminal is redrawn at most once a second)
    table.on_step_end(0, [])
    for name in NAMES[:4]:
        table.on_trial_start(0, [], Trial(name))
        write_trial(sweep, name, (0, 1, 2), beat=(3, "training"))
    table.on_step_end(1, [])  # no state change: nothing printed on a log
    write_trial(sweep, NAMES[0], (4, 8), beat=(64, "evaluating"))
    table.on_step_end(2, [])
    write_trial(sweep, NAMES[0], (64,), result={"stopped_early": False})
    table.on_trial_complete(3, [], Trial(NAMES[0]))
    write_trial(sweep, NAMES[1], (4,), result={"stopped_early": True, "stop_step": 4})
    table.on_trial_complete(4, [], Trial(NAMES[1]))
    table.on_trial_error(5, [], Trial(NAMES[2]))
    table.on_experiment_end([])


def tables(text):
    """Each whole table in the output: its title line and the rows after the header."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "12 trials:" in line]
    return [(lines[i], lines[i + 2:i + 14]) for i in starts]


def test_twelve_trials_on_a_log_print_whole_tables_and_state_changes(tmp_path):
    stream = io.StringIO()
    run_events(tmp_path, stream, tty=None)  # a StringIO is not a terminal
    text = stream.getvalue()
    assert "\x1b" not in text and " | " not in text  # no cursor movement, no one-line-for-all
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    first, last = tables(text)[0], tables(text)[-1]
    assert first[0].endswith("12 trials: 12 pending") and [r.split()[0] for r in first[1]] == NAMES
    assert last[0].endswith("12 trials: 8 pending, 1 training, 1 done, 1 stopped, 1 failed")
    states = {r.split()[0]: r.split()[1] for r in last[1]}
    assert [states[n] for n in NAMES[:4]] == ["done", "stopped", "failed", "training"]
    # between the tables, one line per state change, each a row of the table
    changes = [line for line in text.splitlines() if line.startswith("[sweep") and "trials:" not in line]
    assert [c.split()[2:4] for c in changes] == [[n, "training"] for n in NAMES[:4]] + [
        [NAMES[0], "evaluating"], [NAMES[0], "done"], [NAMES[1], "stopped"], [NAMES[2], "failed"]]


def test_a_log_gets_a_whole_table_every_interval_even_without_changes():
    clock = [0.0]
    stream = io.StringIO()
    live = LiveTable(stream, interval_s=60, tty=False, clock=lambda: clock[0])
    rows = [TrialRow(n, "training", 5, 64) for n in NAMES]
    for t in range(0, 181, 10):  # three minutes of polls, no state change
        clock[0] = float(t)
        live.update(rows, float(t))
    assert len(tables(stream.getvalue())) == 4  # at 0, 60, 120 and 180 s


def drain(fd, out):
    """Read the terminal's screen side while the table is drawn: a full pty buffer would block the writer."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side closed
            return
        if not chunk:
            return
        out.append(chunk)


@pytest.mark.parametrize("columns", [120, 60])
def test_twelve_trials_on_a_terminal_are_redrawn_in_place(tmp_path, columns):
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    stream = os.fdopen(slave, "w", encoding="utf-8")
    chunks = []
    reader = threading.Thread(target=drain, args=(master, chunks), daemon=True)
    reader.start()
    try:
        run_events(tmp_path, stream, tty=None)  # detected: the pseudo-terminal says it is one
    finally:
        stream.close()  # the reader then sees the end
        reader.join(timeout=10)
        os.close(master)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    draws = text.split("\x1b[14F\x1b[J")  # cursor to the table's first line (title + header + 12 rows), clear
    assert len(draws) >= 8 and not draws[0].startswith("\x1b")  # the first draw moves nothing
    for draw in draws:
        lines = draw.splitlines()
        assert len(lines) == 14 and "12 trials:" in lines[0]
        assert [line.split()[0] for line in lines[2:]] == [n[:columns - 1] for n in NAMES]  # one row per trial
        assert max(map(len, lines)) <= min(WIDTH, columns - 1)  # never wraps, so the cursor count holds
    assert not ANSI.sub("", text).count("\x1b")
    last = {line.split()[0]: line.split()[1] for line in draws[-1].splitlines()[2:]}
    assert [last[n] for n in NAMES[:4]] == ["done", "stopped", "failed", "training"]


def test_each_trial_shows_its_own_max_steps_under_per_lr_budgets(tmp_path):
    """Per-LR budgets (orchestrator/budget.py): the live table's step/max_steps is each trial's own budget."""
    from orchestrator.budget import steps_of_trials

    sweep = {"lrs": [1e-4, 1e-3], "seeds": [0], "max_steps": 1000, "lr_steps_budget": 0.064}
    steps = steps_of_trials(sweep)
    names = list(steps)
    table = ProgressTable(tmp_path, names, steps, interval_s=3600, stream=io.StringIO(), poll_s=0, tty=False)
    for name in names:
        write_trial(tmp_path, name, (0, 1), beat=(3, "training"))
    assert {r.trial: r.max_steps for r in table.rows()} == {trial_name(1e-4, 0): 640, trial_name(1e-3, 0): 64}
