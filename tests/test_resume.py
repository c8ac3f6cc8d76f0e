"""``brainvq run --resume RUN_DIR``: a killed pipeline goes on where it stopped.

The slow tests kill a real ``brainvq run --profile smoke`` three times (SIGKILL to the command and
its notebook kernel during 02's and 04's training, as a machine that loses power; SIGTERM during 05,
as a scheduler's time limit), resume it each time, and check what was and was not done again. The
fast ones check the parameter rules on a hand-made run directory.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from brainvq_utils import cli, runner, runs  # noqa: E402
from brainvq_utils.runner import NOTEBOOKS  # noqa: E402

# More epochs than the smoke profile's 4 and 3, so that a kill lands between two epochs.
EPOCHS, PRIOR_EPOCHS = 8, 6
SECTIONS = {"dataset", "vqvae", "codebook", "prior", "generation", "timing"}


def _env(root: Path) -> dict:
    return {**os.environ, "BRAINVQ_DATA_DIR": str(root / "data-home"), "BRAINVQ_RUNS_DIR": str(root / "runs-home"),
            "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg", "BRAINVQ_STATUS_EVERY_S": "1"}


def _start(args, env, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "brainvq_utils.cli", *map(str, args)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc): the notebook kernel of a ``brainvq run``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(proc, condition, what, timeout=300.0):
    """Poll ``condition()`` until it holds; fail if the run ended first or it takes too long."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.05)


def _kill_everything(proc) -> None:
    """SIGKILL the command and its notebook kernel at once, as a machine that loses power."""
    kernels = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in kernels:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in kernels) and time.monotonic() < deadline:
        time.sleep(0.05)


def _state(run: Path, name: str) -> dict:
    return json.loads((run / "checkpoints" / f"{name}_state.json").read_text())


def _mtimes(run: Path, names) -> dict:
    return {n: (run / n).stat().st_mtime_ns for n in names}


@pytest.fixture(scope="module")
def killed_three_times(tmp_path_factory):
    """One smoke run, killed during 02's training, resumed and killed during 04's training, resumed and
    stopped with SIGTERM during 05, resumed to the end. What was seen at each point, and the timings."""
    root = tmp_path_factory.mktemp("resume")
    env, run = _env(root), root / "run"
    seen, t0 = {"timings": {}}, time.monotonic()

    # 1. killed during 02's training, after at least one epoch's checkpoint and before vqvae.keras
    proc = _start(["run", "--profile", "smoke", "--run-dir", run, "-p", f"epochs={EPOCHS}",
                   "-p", f"prior_epochs={PRIOR_EPOCHS}"], env, root)
    _wait_for(proc, lambda: (run / "checkpoints" / "vqvae_state.json").exists(), "02's first checkpoint")
    _kill_everything(proc)
    seen["timings"]["killed in 02 after"] = time.monotonic() - t0
    seen["vqvae_at_kill"] = _state(run, "vqvae")
    seen["vqvae_keras_at_kill"] = (run / "vqvae.keras").exists()
    seen["before_02"] = _mtimes(run, ["dataset.json", "01_data_exploration.ipynb"])

    # 2. resumed, killed during 04's training
    t = time.monotonic()
    proc = _start(["run", "--resume", run], env, root)
    _wait_for(proc, lambda: (run / "checkpoints" / "prior_state.json").exists(), "04's first checkpoint")
    _kill_everything(proc)
    seen["timings"]["resumed, killed in 04 after"] = time.monotonic() - t
    seen["prior_at_kill"] = _state(run, "prior")
    seen["prior_keras_at_kill"] = (run / "prior.keras").exists()
    seen["log_after_02"] = (run / "run.log").read_text()
    seen["vqvae_final"] = _state(run, "vqvae")
    seen["before_04"] = _mtimes(run, ["dataset.json", "01_data_exploration.ipynb", "vqvae.keras",
                                      "02_vqvae_training.ipynb", "03_codebook_inspection.ipynb"])

    # 3. resumed, stopped with SIGTERM while 05 samples
    t = time.monotonic()
    proc = _start(["run", "--resume", run], env, root)
    progress = run / runner.PROGRESS_FILE
    def sampling_in_05():   # 04 samples too (its epoch images and the layout demo): wait until 04 has finished
        try:
            finished = json.loads((run / "run.json").read_text()).get("finished") or {}
        except (OSError, ValueError):   # not written yet, or being replaced
            return False
        return (NOTEBOOKS[3] in finished and progress.exists()
                and "sampling" in progress.read_text(errors="replace"))
    _wait_for(proc, sampling_in_05, "05's sampling")
    kernels = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    seen["sigterm"] = {"stdout": "", "stderr": ""}
    seen["sigterm"]["stdout"], seen["sigterm"]["stderr"] = proc.communicate(timeout=120)
    seen["sigterm"]["rc"] = proc.returncode
    seen["sigterm"]["kernels_left"] = [pid for pid in kernels if _alive(pid)]
    seen["sigterm"]["lock_left"] = (run / runs.LOCK_FILE).exists()
    seen["timings"]["resumed, stopped in 05 after"] = time.monotonic() - t
    seen["metrics_at_sigterm"] = json.loads((run / "metrics.json").read_text())
    seen["before_05"] = _mtimes(run, ["dataset.json", "01_data_exploration.ipynb", "vqvae.keras",
                                      "02_vqvae_training.ipynb", "03_codebook_inspection.ipynb", "prior.keras",
                                      "codes.npz", "04_pixelcnn_training.ipynb"])

    # 4. resumed to the end
    t = time.monotonic()
    proc = _start(["run", "--resume", run], env, root)
    out, err = proc.communicate(timeout=600)
    seen["timings"]["resumed to the end in"] = time.monotonic() - t
    seen["timings"]["all of it"] = time.monotonic() - t0
    seen["final"] = {"rc": proc.returncode, "stdout": out, "stderr": err}
    seen["run"] = run
    print("\nkill-and-resume timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in seen["timings"].items()))
    print("last stdout:\n" + out)
    return seen


@pytest.mark.slow
def test_a_run_killed_during_vqvae_training_continues_from_its_last_finished_epoch(killed_three_times):
    seen, run = killed_three_times, killed_three_times["run"]
    at_kill = seen["vqvae_at_kill"]
    assert not seen["vqvae_keras_at_kill"] and at_kill["epoch"] < EPOCHS - 1, at_kill   # killed mid-training
    finished_epochs = at_kill["epoch"] + 1
    assert f"resuming from the checkpoint of epoch {finished_epochs} in" in seen["log_after_02"]
    final = seen["vqvae_final"]["history"]
    assert len(final["loss"]) == EPOCHS
    # the epochs before the kill were not trained again: their logged losses and clock are kept
    assert final["loss"][:finished_epochs] == at_kill["history"]["loss"]
    assert final["train_seconds"][:finished_epochs] == at_kill["history"]["train_seconds"]
    # 01 finished before the kill and was not run again
    assert seen["before_04"]["dataset.json"] == seen["before_02"]["dataset.json"]
    assert seen["before_04"]["01_data_exploration.ipynb"] == seen["before_02"]["01_data_exploration.ipynb"]


@pytest.mark.slow
def test_a_run_killed_during_prior_training_continues_from_its_last_finished_epoch(killed_three_times):
    seen, run = killed_three_times, killed_three_times["run"]
    at_kill = seen["prior_at_kill"]
    assert not seen["prior_keras_at_kill"] and at_kill["epoch"] < PRIOR_EPOCHS - 1, at_kill
    final = _state(run, "prior")["history"]
    assert len(final["loss"]) == PRIOR_EPOCHS
    assert final["loss"][:at_kill["epoch"] + 1] == at_kill["history"]["loss"]
    assert f"resuming from the checkpoint of epoch {at_kill['epoch'] + 1} in" in (run / "run.log").read_text()
    for name, mtime in seen["before_04"].items():   # 01-03 and the VQ-VAE were not made again
        assert seen["before_05"][name] == mtime, name


@pytest.mark.slow
def test_sigterm_during_generation_stops_cleanly_and_the_resumed_run_finishes(killed_three_times):
    seen, run = killed_three_times, killed_three_times["run"]
    stopped = seen["sigterm"]
    assert stopped["rc"] == 130, stopped
    assert f"brainvq: interrupted; continue with `brainvq run --resume {run}`" in stopped["stderr"], stopped["stderr"]
    assert "Traceback" not in stopped["stderr"]
    assert not stopped["lock_left"] and stopped["kernels_left"] == []   # the kernel was shut down, the lock freed
    assert "generation" not in seen["metrics_at_sigterm"]              # it was stopped before 05 ended
    final = seen["final"]
    assert final["rc"] == 0, (final["stdout"][-2000:], final["stderr"][-3000:])
    for i, name in enumerate(NOTEBOOKS[:4], 1):
        assert f"[{i}/5] {name} finished before (" in final["stdout"], final["stdout"]
    assert "[5/5] 05_generation_and_evaluation done in" in final["stdout"]
    after = {n: (run / n).stat().st_mtime_ns for n in seen["before_05"]}
    assert after == seen["before_05"]                                    # 01-04's work was not redone
    metrics = json.loads((run / "metrics.json").read_text())
    assert SECTIONS <= set(metrics), set(metrics)
    assert set(NOTEBOOKS) | {"total"} == set(metrics["timing"])
    assert metrics["timing"]["total"] >= sum(metrics["timing"][n] for n in NOTEBOOKS) - 0.5
    record = json.loads((run / "run.json").read_text())
    assert list(record["finished"]) == list(NOTEBOOKS) and len(record["resumed"]) == 3
    assert not (run / runs.LOCK_FILE).exists()


# ----------------------------------------------------------------------------- the rules, on a hand-made run
@pytest.fixture
def made_run(tmp_path, monkeypatch):
    """A run directory as a smoke run with epochs=8 leaves it when it is killed during 04: 01-03 finished."""
    monkeypatch.setenv("BRAINVQ_RUNS_DIR", str(tmp_path / "runs-home"))
    monkeypatch.setenv("BRAINVQ_DATA_DIR", str(tmp_path / "data-home"))
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "logs" / "prior").mkdir(parents=True)
    parameters = dict(profile="smoke", dataset="synthetic", data_dir=None, run_dir=str(run),
                      overrides={"epochs": "8"})
    finished = {n: {"seconds": 1.5, "ended": "2026-11-22 10:00:00"} for n in NOTEBOOKS[:3]}
    runs.write_json(run / "run.json", {"parameters": parameters, "notebooks": list(NOTEBOOKS),
                                       "started": "2026-11-22 10:00:00", "finished": finished})
    for name in ("dataset.json", "vqvae.keras", "vqvae_config.json", "checkpoints/vqvae_state.json",
                 "checkpoints/vqvae_last.keras", "codes.npz", "prior_config.json", "checkpoints/prior_state.json",
                 "checkpoints/prior_last.keras", "logs/prior/events", *(f"{n}.ipynb" for n in NOTEBOOKS[:4]),
                 *(f"figures/{n[:2]}_x.png" for n in NOTEBOOKS[:4])):
        (run / name).write_bytes(b"made")
    runs.write_json(run / "metrics.json", {"dataset": {"n": 1}, "vqvae": {"n": 2}, "codebook": {"n": 3},
                                           "timing": {"01_data_exploration": 1.5}})
    return run


def _stub_runner(monkeypatch):
    """Replace the notebook runner: the tests of the rules need no kernel."""
    calls = []

    def fake(run_dir, names, verbose, status_every_s):
        calls.append((run_dir, names))
        return run_dir
    monkeypatch.setattr(runner, "_run_locked", fake)
    return calls


def test_resume_refuses_a_changed_parameter_naming_it(made_run, capsys):
    before = {p: p.read_bytes() for p in made_run.rglob("*") if p.is_file()}
    assert cli.main(["run", "--resume", str(made_run), "-p", "prior_epochs=9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("brainvq: error:"), err
    assert "prior_epochs=3 -> 9" in err and "--overwrite" in err and "04_pixelcnn_training" in err, err
    assert {p: p.read_bytes() for p in made_run.rglob("*") if p.is_file()} == before   # nothing touched


def test_resume_refuses_another_profile_naming_what_it_changes(made_run, capsys):
    assert cli.main(["run", "--resume", str(made_run), "--profile", "demo"]) == 2
    err = capsys.readouterr().err
    assert "image_size=32 -> 128" in err and "01_data_exploration" in err, err


def test_resume_with_the_recorded_or_free_parameters_runs_what_is_left(made_run, monkeypatch):
    calls = _stub_runner(monkeypatch)
    # the same values as recorded, and devices/tensorboard, which do not change what is computed
    assert cli.main(["run", "--resume", str(made_run), "--profile", "smoke", "-p", "epochs=8",
                     "-p", "devices=1", "-p", "tensorboard=true"]) == 0
    assert calls == [(made_run, list(NOTEBOOKS))]
    record = json.loads((made_run / "run.json").read_text())
    assert list(record["finished"]) == list(NOTEBOOKS[:3]) and len(record["resumed"]) == 1
    assert record["parameters"]["overrides"] == {"epochs": "8", "devices": "1", "tensorboard": "true"}
    assert (made_run / "checkpoints" / "prior_state.json").exists()   # 04 goes on from its checkpoint


def test_resume_overwrite_runs_again_from_the_first_notebook_a_changed_parameter_reaches(made_run, monkeypatch,
                                                                                         capsys):
    calls = _stub_runner(monkeypatch)
    assert cli.main(["run", "--resume", str(made_run), "-p", "epochs=9", "--overwrite"]) == 0
    assert calls == [(made_run, list(NOTEBOOKS))]
    record = json.loads((made_run / "run.json").read_text())
    assert list(record["finished"]) == ["01_data_exploration"]        # 02 and after run again
    assert record["parameters"]["overrides"]["epochs"] == "9"
    left = {str(p.relative_to(made_run)) for p in made_run.rglob("*") if p.is_file()}
    assert {"dataset.json", "01_data_exploration.ipynb", "figures/01_x.png"} <= left
    for gone in ("vqvae.keras", "checkpoints/vqvae_state.json", "codes.npz", "checkpoints/prior_last.keras",
                 "02_vqvae_training.ipynb", "figures/03_x.png", "logs/prior/events"):
        assert gone not in left, gone
    assert set(json.loads((made_run / "metrics.json").read_text())) == {"dataset", "timing"}
    assert "epochs=8 -> 9" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--resume", "{tmp}/nosuch"], ["no run directory", "nosuch"]),
    (["--resume", "{tmp}/plain"], ["no run.json", "plain"]),
    (["--resume", "{run}", "--only", "05"], ["--only cannot be combined with --resume"]),
    (["--resume", "{run}", "--run-dir", "{tmp}/other"], ["two run directories"]),
])
def test_resume_usage_errors_are_one_line(made_run, tmp_path, capsys, args, words):
    (tmp_path / "plain").mkdir()
    args = [a.format(tmp=tmp_path, run=made_run) for a in args]
    assert cli.main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and all(w in err for w in words), err


def test_resume_refuses_a_run_directory_in_use(made_run, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (made_run / runs.LOCK_FILE).write_text(f"{holder.pid}\n")
        assert cli.main(["run", "--resume", str(made_run)]) == 2
        assert f"in use by another brainvq run (process {holder.pid})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_run_restores_the_sigterm_handler(made_run, monkeypatch):
    _stub_runner(monkeypatch)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["run", "--resume", str(made_run)]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_records_the_data_folder_as_an_absolute_path(tmp_path, monkeypatch):
    """The notebooks run in notebooks/, so a relative --data-dir must not reach them as given."""
    monkeypatch.setenv("BRAINVQ_RUNS_DIR", str(tmp_path / "runs-home"))
    monkeypatch.chdir(tmp_path)
    _stub_runner(monkeypatch)
    run = runner.run_notebooks(str(tmp_path / "run"), profile="smoke", dataset="oasis", data_dir="my-oasis")
    record = json.loads((run / "run.json").read_text())
    assert record["parameters"]["data_dir"] == str(tmp_path / "my-oasis")
    assert record["finished"] == {} and record["notebooks"] == list(NOTEBOOKS)
