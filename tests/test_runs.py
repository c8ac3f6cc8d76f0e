"""Tests of brainvq_utils.runs: run directories, JSON files, metrics, artefact hand-over."""

import json
import os
from pathlib import Path

import pytest

from brainvq_utils import runs
from brainvq_utils.errors import BrainVQError


@pytest.fixture(autouse=True)
def runs_home(tmp_path, monkeypatch):
    home = tmp_path / "runs-home"
    monkeypatch.setenv("BRAINVQ_RUNS_DIR", str(home))
    monkeypatch.setenv("BRAINVQ_DATA_DIR", str(tmp_path / "data-home"))
    monkeypatch.delenv("BRAINVQ_RUN_DIR", raising=False)
    return home


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- new_run_dir
def test_new_run_dir_creates_figures(tmp_path):
    run = runs.new_run_dir(str(tmp_path / "r1"))
    assert run == tmp_path / "r1"
    assert (run / "figures").is_dir()
    assert list(run.iterdir()) == [run / "figures"]


def test_new_run_dir_plain_name_goes_to_runs_dir(runs_home):
    run = runs.new_run_dir("myrun")
    assert run == runs_home / "myrun" and (run / "figures").is_dir()


def test_new_run_dir_default_name(runs_home):
    run = runs.new_run_dir(profile="smoke")
    assert run.parent == runs_home
    assert run.name.startswith("smoke-")
    assert (run / "figures").is_dir()


def test_new_run_dir_reuses_empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    run = runs.new_run_dir(str(tmp_path / "empty"))
    assert (run / "figures").is_dir()


def test_new_run_dir_refuses_non_empty(tmp_path):
    run = runs.new_run_dir(str(tmp_path / "r1"))
    runs.write_json(run / "run.json", {"x": 1})
    (run / "figures" / "fig.png").write_bytes(b"png")
    before = snapshot(run)
    with pytest.raises(BrainVQError, match="overwrite"):
        runs.new_run_dir(str(run))
    assert snapshot(run) == before


def test_overwrite_replaces_a_run(tmp_path):
    run = runs.new_run_dir(str(tmp_path / "r1"))
    runs.write_json(run / "run.json", {"x": 1})
    (run / "model.keras").write_bytes(b"old")
    again = runs.new_run_dir(str(run), overwrite=True)
    assert again == run
    assert sorted(p.name for p in run.iterdir()) == ["figures"]
    assert not any((run / "figures").iterdir())


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub" / "data.csv").write_text("1,2,3")
    before = snapshot(folder)
    with pytest.raises(BrainVQError, match="run.json"):
        runs.new_run_dir(str(folder), overwrite=True)
    assert snapshot(folder) == before
    assert not (folder / "figures").exists()


def test_new_run_dir_on_a_file_is_a_user_error(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(BrainVQError):
        runs.new_run_dir(str(path))
    assert path.read_text() == "x"


# ----------------------------------------------------------------------------- JSON and metrics
def test_write_json_round_trip_and_no_temp_files(tmp_path):
    path = tmp_path / "deep" / "er" / "data.json"
    runs.write_json(path, {"a": 1, "b": [1.5, "x"]})
    runs.write_json(path, {"a": 2})            # replaces, does not merge
    assert runs.read_json(path) == {"a": 2}
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(path.parent) == ["data.json"]


def test_write_json_failure_leaves_no_temp_file(tmp_path):
    path = tmp_path / "m.json"
    runs.write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        runs.write_json(path, {"bad": object()})
    assert runs.read_json(path) == {"ok": 1}       # the old file is intact
    assert os.listdir(tmp_path) == ["m.json"]


def test_read_json_missing_is_empty(tmp_path):
    assert runs.read_json(tmp_path / "nope.json") == {}
    assert runs.read_metrics(tmp_path) == {}


def test_read_json_invalid_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": 1,')
    with pytest.raises(BrainVQError) as err:
        runs.read_json(path)
    assert str(path) in str(err.value)
    with pytest.raises(BrainVQError, match="metrics.json"):
        (tmp_path / "metrics.json").write_text("not json")
        runs.update_metrics(tmp_path, "x", {})


def test_update_metrics_keeps_other_sections(tmp_path):
    runs.update_metrics(tmp_path, "dataset", {"images": 10})
    runs.update_metrics(tmp_path, "vqvae", {"ssim_mean": 0.9})
    out = runs.update_metrics(tmp_path, "dataset", {"images": 12})
    expected = {"dataset": {"images": 12}, "vqvae": {"ssim_mean": 0.9}}
    assert out == expected
    assert runs.read_metrics(tmp_path) == expected
    assert json.loads((tmp_path / "metrics.json").read_text()) == expected
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


# ----------------------------------------------------------------------------- require
@pytest.mark.parametrize("artefact,producer", sorted(runs.PRODUCERS.items()))
def test_require_missing_names_the_producer(tmp_path, artefact, producer):
    with pytest.raises(BrainVQError) as err:
        runs.require(tmp_path, artefact)
    msg = str(err.value)
    assert f"run {producer} first" in msg and artefact in msg and str(tmp_path) in msg


def test_require_vqvae_message(tmp_path):
    with pytest.raises(BrainVQError, match="run 02_vqvae_training first"):
        runs.require(tmp_path, "vqvae.keras")


def test_require_unknown_artefact(tmp_path):
    with pytest.raises(BrainVQError, match="codes.npz"):
        runs.require(tmp_path, "codes.npz")


def test_require_present_returns_path(tmp_path):
    (tmp_path / "vqvae.keras").write_bytes(b"model")
    assert runs.require(tmp_path, "vqvae.keras") == tmp_path / "vqvae.keras"


# ----------------------------------------------------------------------------- default_run_dir
def test_default_run_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINVQ_RUN_DIR", str(tmp_path / "shared"))
    assert runs.default_run_dir("smoke") == tmp_path / "shared"
    assert runs.default_run_dir("full") == tmp_path / "shared"


def test_default_run_dir_without_env(runs_home):
    assert runs.default_run_dir("smoke") == runs_home / "notebooks-smoke"
    assert runs.default_run_dir() == runs_home / "notebooks-demo"


# ----------------------------------------------------------------------------- safe run directories
def _holder(run_dir):
    """A process that holds ``run_dir`` as a `brainvq run` does, until killed."""
    import subprocess
    import sys
    code = ("import sys, time\nfrom brainvq_utils.runs import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_directory_in_use_refuses_naming_the_first_process(tmp_path, capsys):
    from brainvq_utils import cli
    run_dir = runs.new_run_dir(str(tmp_path / "busy"))
    runs.write_json(run_dir / "run.json", {"parameters": {}})
    before = snapshot(run_dir)
    proc = _holder(run_dir)
    try:
        for attempt in (lambda: runs.new_run_dir(str(run_dir), overwrite=True),
                        lambda: runs.run_lock(run_dir).__enter__()):
            with pytest.raises(BrainVQError, match=f"in use by another brainvq run \\(process {proc.pid}\\)"):
                attempt()
        assert cli.main(["run", "--profile", "smoke", "--run-dir", str(run_dir), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"process {proc.pid}" in err and "\n" not in err
        assert {k: v for k, v in snapshot(run_dir).items() if k != runs.LOCK_FILE} == \
            {k: v for k, v in before.items() if k != runs.LOCK_FILE}          # nothing of the first run touched
    finally:
        proc.kill()
        proc.wait()
    with runs.run_lock(run_dir) as lock:          # a killed run's lock is taken over
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


@pytest.mark.parametrize("code, hint", [(28, "free some disk space"), (13, "make it writable"),
                                        (30, "use a writable disk")])
def test_a_failed_write_is_one_line_and_keeps_what_was_there(tmp_path, code, hint):
    """A full disk (ENOSPC), a folder we may not write (EACCES), a read-only disk (EROFS): simulated,
    since as root a chmod would not stop the write."""
    import matplotlib.pyplot as plt

    from brainvq_utils import plotting
    run_dir = runs.new_run_dir(str(tmp_path / "run"))
    runs.update_metrics(run_dir, "vqvae", {"test_ssim_mean": 0.97})
    fig = plt.figure()
    plotting.save_figure("grid", fig, folder=run_dir / "figures")
    before = snapshot(run_dir)

    def fail(path, **kw):
        Path(path).write_bytes(b"\x89PNG half")           # a part written, then the disk refuses
        raise OSError(code, os.strerror(code))

    fig2 = plt.figure()
    fig2.savefig = fail
    with pytest.raises(BrainVQError, match=f"cannot write {run_dir / 'figures' / 'grid.png'}: .*{hint}") as err:
        plotting.save_figure("grid", fig2, folder=run_dir / "figures")
    assert "\n" not in str(err.value)
    assert snapshot(run_dir) == before                     # the earlier figure and metrics intact, no temp file
    with pytest.raises(BrainVQError, match="cannot write .*metrics.json"):
        with runs.atomic_path(run_dir / "metrics.json") as tmp:
            tmp.write_text('{"half": ')
            raise OSError(code, os.strerror(code))
    assert snapshot(run_dir) == before


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(BrainVQError, match=r"cannot write .*ro: Permission denied; make it writable or choose "
                                           r"another --run-dir"):
        runs.new_run_dir(str(tmp_path / "ro"))


def test_artefacts_are_written_under_a_temporary_name_and_renamed(tmp_path, monkeypatch):
    """Killed mid-write, no file under the final name (it would look complete)."""
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append((Path(a).name, Path(b).name)), real_replace(a, b)))
    runs.write_json(tmp_path / "metrics.json", {"a": 1})
    with runs.atomic_path(tmp_path / "codes.npz") as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and not (tmp_path / "codes.npz").exists()
    assert [b for _, b in seen] == ["metrics.json", "codes.npz"] and all(a.startswith(".") for a, _ in seen)
    with pytest.raises(KeyboardInterrupt):
        with runs.atomic_path(tmp_path / "prior.keras") as tmp:
            tmp.write_bytes(b"half a model")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npz", "metrics.json"]
