"""Progress: the status lines a kernel reports, the terminal line of ``brainvq run`` that
shows them, and the quiet terminal that sends everything else to the run's log."""

import io
import subprocess
import sys

import pytest

from brainvq_utils import pipeline, progress


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
        bar.update(1)                       # the first update always reports
        assert progress.read(status_file).startswith("sampling: 1/10 rows, about")
        for _ in range(8):
            bar.update(1)                   # throttled: nothing new within the hour
        assert progress.read(status_file).startswith("sampling: 1/10 rows")
        bar.update(1)                       # the last one always reports
    assert progress.read(status_file) == "sampling: 10/10 rows"


def test_headless_means_a_line_per_epoch_and_no_bars(monkeypatch):
    monkeypatch.setenv(progress.HEADLESS_ENV, "1")
    assert not progress.interactive() and progress.keras_verbose() == 2
    monkeypatch.setenv(progress.HEADLESS_ENV, "0")
    assert progress.keras_verbose() == (1 if progress.interactive() else 2)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_terminal_on_a_pipe_adds_a_line_only_when_the_status_changes_and_not_too_often():
    out = io.StringIO()
    term = pipeline._Terminal(out, every_s=3600)
    term.status("[1/5] 01: starting")
    term.status("[1/5] 01: starting")       # unchanged
    term.status("[1/5] 01: epoch 2")        # changed, but within every_s
    term.line("[1/5] 01 done in 3.0 s")
    assert out.getvalue().splitlines() == ["[1/5] 01: starting", "[1/5] 01 done in 3.0 s"]


def test_terminal_on_a_tty_rewrites_one_line_in_place():
    out = FakeTTY()
    term = pipeline._Terminal(out, every_s=3600)
    term.status("[2/5] 02: epoch 1/20")
    term.status("[2/5] 02: epoch 2/20")
    term.line("[2/5] 02 done in 9.0 s")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\r\033[K[2/5] 02 done in 9.0 s\n")
    assert "\r\033[K[2/5] 02: epoch 1/20\r\033[K[2/5] 02: epoch 2/20" in text


def test_quiet_terminal_sends_child_processes_and_stderr_to_the_log(tmp_path, capfd):
    log = tmp_path / "run.log"
    with pipeline._quiet_terminal(log, verbose=False) as terminal:
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
    with pipeline._quiet_terminal(tmp_path / "run.log", verbose=True) as terminal:
        terminal.write("shown\n")
        print("also shown", file=sys.stderr)
    shown = capfd.readouterr()
    assert shown.out == "shown\n" and "also shown" in shown.err
    assert not (tmp_path / "run.log").exists()
