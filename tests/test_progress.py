"""Progress: the status lines a kernel reports, the terminal line of ``brainvq run`` that
shows them, and the quiet terminal that sends everything else to the run's log."""

import io
import os
import subprocess
import sys

import pytest

from brainvq_utils import progress, runner


@pytest.fixture
def status_file(tmp_path, monkeypatch):
    path = tmp_path / "status"
    monkeypatch.setenv(progress.FILE_ENV, str(path))
    return path


def test_report_writes_one_line_only_where_asked(tmp_path, status_file, monkeypatch):
    progress.report("epoch 3/20,\n   loss 0.1")
    assert progress.read(status_file) == "epoch 3/20, loss 0.1"
    assert [p.name for p in tmp_path.iterdir()] == ["status"]         # no temporary file left
    monkeypatch.delenv(progress.FILE_ENV)
    progress.report("not written")
    assert progress.read(status_file) == "epoch 3/20, loss 0.1"
    assert progress.read(tmp_path / "missing") == ""


def test_bar_reports_its_count_and_the_end(status_file):
    with progress.Bar(10, "sampling", "row", show=False, every_s=3600) as bar:
        bar.update(1)                       # the first update always reports (no time left yet: it
        assert progress.read(status_file) == "sampling: 1/10 rows"   # may have compiled the step)
        for _ in range(8):
            bar.update(1)                   # throttled: nothing new within the hour
        assert progress.read(status_file) == "sampling: 1/10 rows"
        assert bar.status().startswith("sampling: 9/10 rows, about ") and bar.status().endswith(" s left")
        bar.update(1)                       # the last one always reports
    assert progress.read(status_file) == "sampling: 10/10 rows"


def test_a_watched_notebook_gets_live_bars_unless_headless(monkeypatch):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.delenv(progress.HEADLESS_ENV, raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/02_vqvae_training.ipynb")    # JupyterLab started it
    assert progress.interactive() and progress.keras_verbose() == 1
    monkeypatch.setenv(progress.HEADLESS_ENV, "1")
    assert not progress.interactive() and progress.keras_verbose() == 2
    monkeypatch.delenv(progress.HEADLESS_ENV)
    monkeypatch.delenv("JPY_SESSION_NAME")                                         # papermill / nbval started it
    assert not progress.interactive() and progress.keras_verbose() == 2


NATIVE_START = """
import os, sys
from brainvq_utils.quiet import quiet_native_startup, STARTUP_LINES
before = len(STARTUP_LINES)             # importing brainvq_utils loaded TensorFlow: its lines are in already
try:
    with quiet_native_startup():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1795331450.853834   21853 cudart_stub.cc:31] Could not find cuda drivers\\n")
        os.write(2, b"a Python warning\\n")
        if sys.argv[1] == "fail":
            raise ImportError("no such module")
finally:
    print(len(STARTUP_LINES) - before)
"""


@pytest.mark.parametrize("how", ["ok", "fail"])
def test_native_start_up_lines_are_kept_off_the_terminal_and_the_rest_is_not(how):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", NATIVE_START, how], capture_output=True, text=True, env=env)
    if how == "ok":
        assert done.returncode == 0 and done.stdout.strip() == "2"          # the two native lines are kept ...
        assert done.stderr == "a Python warning\n"                          # ... and nothing else
    else:                                                                   # a failed import shows everything
        assert done.returncode == 1 and done.stdout.strip() == "0"
        assert "Could not find cuda drivers" in done.stderr and "a Python warning" in done.stderr
        assert "ImportError: no such module" in done.stderr


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_terminal_on_a_pipe_adds_a_line_only_when_the_status_changes_and_not_too_often():
    out = io.StringIO()
    term = runner._Terminal(out, every_s=3600)
    term.status("[1/5] 01: starting")
    term.status("[1/5] 01: starting")       # unchanged
    term.status("[1/5] 01: epoch 2")        # changed, but within every_s
    term.line("[1/5] 01 done in 3.0 s")
    assert out.getvalue().splitlines() == ["[1/5] 01: starting", "[1/5] 01 done in 3.0 s"]


def test_terminal_on_a_tty_rewrites_one_line_in_place():
    out = FakeTTY()
    term = runner._Terminal(out, every_s=3600)
    term.status("[2/5] 02: epoch 1/20")
    term.status("[2/5] 02: epoch 2/20")
    term.line("[2/5] 02 done in 9.0 s")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\r\033[K[2/5] 02 done in 9.0 s\n")
    assert "\r\033[K[2/5] 02: epoch 1/20\r\033[K[2/5] 02: epoch 2/20" in text


def test_quiet_terminal_sends_child_processes_and_stderr_to_the_log(tmp_path, capfd):
    log = tmp_path / "run.log"
    with open(log, "a") as log_file, runner._quiet_terminal(log_file, verbose=False) as terminal:
        terminal.write("progress line\n")
        terminal.flush()
        print("a print")
        print("a warning", file=sys.stderr)
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'C++ chatter\\n'); print('kernel out')"],
                       check=True)
    shown = capfd.readouterr()
    assert shown.out == "progress line\n" and shown.err == ""
    text = log.read_text()
    for line in ("a print", "a warning", "C++ chatter", "kernel out"):
        assert line in text
    print("after")                          # the descriptors are restored
    assert capfd.readouterr().out == "after\n"


def test_verbose_terminal_changes_nothing(tmp_path, capfd):
    with runner._quiet_terminal(None, verbose=True) as terminal:
        terminal.write("shown\n")
        print("also shown", file=sys.stderr)
    shown = capfd.readouterr()
    assert shown.out == "shown\n" and "also shown" in shown.err


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_status_interval_is_one_line(monkeypatch, value):
    monkeypatch.setenv("BRAINVQ_STATUS_EVERY_S", value)
    with pytest.raises(Exception, match="BRAINVQ_STATUS_EVERY_S=.* must be a number of seconds"):
        runner.status_interval()
    assert runner.status_interval("2.5") == 2.5
