"""Tests of the ``brainvq`` command line (brainvq_utils.cli), as a subprocess and in-process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from brainvq_utils import cli  # noqa: E402
from brainvq_utils.config import PROFILES  # noqa: E402
from brainvq_utils.paths import PROJ_ROOT  # noqa: E402

OASIS_DIRS = ["keras_png_slices_test", "keras_png_slices_train", "keras_png_slices_validate"]
# TensorFlow/absl log lines ("I0000 00:00:1795237527.823560 11372 port.cc:153] ...") and friends,
# and the notebook kernel's own log ("[IPKernelApp] WARNING | Kernel is running over TCP ...").
LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:[\d.]+\s|WARNING: All log messages|"
                      r"To enable the following instructions|\[IPKernelApp\] )")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Throw-away data/run folders, for this process (in-process main) and for subprocesses."""
    values = {"BRAINVQ_DATA_DIR": str(tmp_path / "data-home"),
              "BRAINVQ_RUNS_DIR": str(tmp_path / "runs-home"),
              "BRAINVQ_RUN_DIR": str(tmp_path / "runs-home" / "notebooks"),
              "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def brainvq(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "brainvq_utils.cli", *map(str, args)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def one_error(stderr: str) -> str:
    """The single 'brainvq: error:' line of stderr (after dropping TF log lines)."""
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one error line, got {lines!r}"
    assert lines[0].startswith("brainvq: error:"), lines
    assert "Traceback" not in stderr
    return lines[0]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- synth
def test_synth_oasis_and_refuses_to_overwrite(tmp_path, env):
    out = tmp_path / "cohort"
    res = brainvq(["synth", out, "--subjects", "3", "--size", "64"], env, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "96 slices" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["cohort.json"] + OASIS_DIRS
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 3 * 32
    assert all(re.fullmatch(r"case_\d{3}_slice_\d+\.nii\.png", p.name) for p in pngs)
    manifest = json.loads((out / "cohort.json").read_text())
    assert manifest["subjects"] == 3 and manifest["size"] == 64 and manifest["layout"] == "oasis"
    assert sum(len(v) for v in manifest["splits"].values()) == 3
    before = snapshot(out)

    again = brainvq(["synth", out, "--subjects", "3", "--size", "64"], env, tmp_path)
    assert again.returncode == 2
    assert "overwrite" in one_error(again.stderr)
    assert snapshot(out) == before


def test_synth_adni_layout_in_process(tmp_path, env, capsys):
    out = tmp_path / "adni"
    assert cli.main(["synth", str(out), "--subjects", "4", "--size", "64", "--layout", "adni"]) == 0
    assert "adni layout" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["AD_NC", "cohort.json"]
    for split in ("train", "test"):
        for group in ("AD", "NC"):
            assert (out / "AD_NC" / split / group).is_dir()
    jpegs = list((out / "AD_NC").rglob("*.jpeg"))
    assert len(jpegs) == 4 * 32
    assert {p.parent.name for p in jpegs} == {"AD", "NC"}
    manifest = json.loads((out / "cohort.json").read_text())
    assert manifest["layout"] == "adni" and manifest["atrophy"] is True


def test_synth_bad_size_in_process(tmp_path, env, capsys):
    assert cli.main(["synth", str(tmp_path / "x"), "--subjects", "3", "--size", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error:") and "size=50" in err and "\n" not in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*.png"))


# ----------------------------------------------------------------------------- run: bad input
def test_run_unknown_profile(tmp_path, env):
    res = brainvq(["run", "--profile", "nonsense", "--run-dir", tmp_path / "r"], env, tmp_path)
    assert res.returncode == 2
    line = one_error(res.stderr)
    assert "nonsense" in line
    for name in PROFILES:
        assert name in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("param,word", [("epochs=0", "epochs"), ("epochs=-1", "epochs"),
                                        ("nokey=1", "nokey"), ("epochs=abc", "epochs"),
                                        ("epochs", "KEY=VALUE"), ("=5", "KEY=VALUE"),
                                        ("prior_arch=transformer", "prior_arch='transformer'"),
                                        ("decode_steps=0", "decode_steps"), ("realism_folds=1", "realism_folds")])
def test_run_bad_parameters(tmp_path, env, capsys, param, word):
    run_dir = tmp_path / "r"
    assert cli.main(["run", "--profile", "smoke", "--run-dir", str(run_dir), "-p", param]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("brainvq: error:") and "\n" not in err
    assert word in err
    assert not run_dir.exists()   # failed before making the run directory


def test_run_none_for_numeric_parameter(tmp_path, env, capsys):
    assert cli.main(["run", "--run-dir", str(tmp_path / "r"), "-p", "res_blocks=none"]) == 2


def test_run_into_non_empty_dir_is_refused(tmp_path, env, capsys):
    run_dir = tmp_path / "existing"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"old": true}\n')
    (run_dir / "vqvae.keras").write_bytes(b"weights")
    before = snapshot(run_dir)
    assert cli.main(["run", "--profile", "smoke", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error:") and "overwrite" in err and str(run_dir) in err
    assert snapshot(run_dir) == before


def test_run_overwrite_refuses_non_run_folder(tmp_path, env, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert cli.main(["run", "--profile", "smoke", "--run-dir", str(folder), "--overwrite"]) == 2
    assert "run.json" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- run: a notebook fails
def test_run_missing_artefact_names_the_notebook(tmp_path, env):
    run_dir = tmp_path / "r1"
    res = brainvq(["run", "--profile", "smoke", "--only", "02", "--run-dir", run_dir], env, tmp_path,
                  timeout=400)
    assert res.returncode == 2, (res.stdout[-2000:], res.stderr[-3000:])
    line = one_error(res.stderr)
    assert "02_vqvae_training failed" in line
    assert "run 01_data_exploration first" in line
    assert "dataset.json" in line
    # The run directory holds run.json and the executed notebook with the full error.
    record = json.loads((run_dir / "run.json").read_text())
    assert record["notebooks"] == ["02_vqvae_training"]
    assert record["parameters"]["profile"] == "smoke"
    assert (run_dir / "02_vqvae_training.ipynb").exists()
    assert not (run_dir / "vqvae.keras").exists()


# ----------------------------------------------------------------------------- run: what the terminal shows
# Every line `brainvq run` may print: where the run goes, a progress line per notebook (moving),
# a line as each notebook ends, and the last line. Nothing else reaches the terminal.
RUN_LINES = [re.compile(p) for p in (
    r"run directory: \S+ \(everything the notebooks print: run\.log\)",
    r"\[[1-5]/5\] 0[1-5]_[a-z_]+: \S.*",
    r"\[[1-5]/5\] 0[1-5]_[a-z_]+ done in \d+\.\d s",
    r"all 5 notebooks done in \d+\.\d s; metrics: \S+metrics\.json")]


def _home_env(root: Path) -> dict:
    """The ``env`` fixture's variables for a module-scoped fixture, without TF_CPP_MIN_LOG_LEVEL: the chatter
    must be kept off by brainvq, not by the test; on a pipe, a new status line at most every second."""
    env = {**os.environ, "BRAINVQ_DATA_DIR": str(root / "data-home"), "BRAINVQ_RUNS_DIR": str(root / "runs-home"),
           "BRAINVQ_RUN_DIR": str(root / "runs-home" / "notebooks"), "MPLBACKEND": "Agg",
           "BRAINVQ_STATUS_EVERY_S": "1"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One whole ``brainvq run --profile smoke`` (its result and run directory)."""
    root = tmp_path_factory.mktemp("smoke")
    res = brainvq(["run", "--profile", "smoke", "--run-dir", root / "run"], _home_env(root), root, timeout=900)
    return res, root / "run"


@pytest.mark.slow
def test_run_smoke_pipeline_shows_only_its_progress_lines(smoke_run):
    res, run_dir = smoke_run
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    lines = res.stdout.splitlines()
    assert [line for line in lines if not any(p.fullmatch(line) for p in RUN_LINES)] == []
    assert res.stderr == ""
    assert len([line for line in lines if RUN_LINES[2].fullmatch(line)]) == 5
    statuses = [line for line in lines if RUN_LINES[1].fullmatch(line) and not RUN_LINES[2].fullmatch(line)]
    assert any("epoch" in line for line in statuses), statuses       # the training moved the line
    log = (run_dir / "run.log").read_text()
    assert "profile smoke; run directory" in log                     # the notebooks' own output is kept
    for line in lines:
        assert f"brainvq: {line}" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"dataset", "vqvae", "prior", "generation", "timing"} <= set(metrics)
    assert not (run_dir / ".progress").exists()


@pytest.mark.slow
def test_the_executed_notebooks_of_a_run_hold_no_red_blocks(smoke_run):
    """A clean first screen: no stderr output in any cell of the five executed notebooks, and none of the
    native start-up lines anywhere in them; those lines are kept in run.log instead."""
    from brainvq_utils.quiet import is_chatter
    res, run_dir = smoke_run
    assert res.returncode == 0, res.stderr[-3000:]
    found = []
    for nb in sorted(run_dir.glob("0*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", ""))
                if out.get("name") == "stderr" or any(is_chatter(line) for line in text.splitlines()):
                    found.append(f"{nb.name} cell {i}: {text[:200]!r}")
    assert not found, "\n".join(found)
    log = (run_dir / "run.log").read_text()
    assert "Could not find cuda drivers" in log or "cuInit" in log or "absl::InitializeLog" in log
    notebook_01 = json.loads((run_dir / "01_data_exploration.ipynb").read_text())
    assert any("computes on: CPU" in "".join(o.get("text", "")) for c in notebook_01["cells"] for o in c.get("outputs", []))


def _numbers(tree, prefix="") -> dict:
    """Every value of a metrics.json, flattened to dotted keys."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _timing(key: str) -> bool:
    return key.startswith("timing.") or key.endswith("_seconds")


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics_in_a_second_smoke_run(smoke_run, tmp_path):
    """Determinism (README "Same seed, same numbers"): a second smoke run, with its own freshly built
    cohort, gives every number of metrics.json but the timings again, exactly."""
    res, run_dir = smoke_run
    assert res.returncode == 0, res.stderr[-3000:]
    again = brainvq(["run", "--profile", "smoke", "--run-dir", tmp_path / "run"], _home_env(tmp_path), tmp_path,
                    timeout=900)
    assert again.returncode == 0, (again.stdout[-2000:], again.stderr[-3000:])
    first = _numbers(json.loads((run_dir / "metrics.json").read_text()))
    second = _numbers(json.loads((tmp_path / "run" / "metrics.json").read_text()))
    assert set(first) == set(second)
    compared = {k: v for k, v in first.items() if not _timing(k) and k not in ("dataset.root", "dataset.data_dir")}
    assert len(compared) > 80                                            # the scores, not just a few
    assert {k: second[k] for k in compared} == compared
    assert sum(first[k] != second[k] for k in first if _timing(k)) > 0   # timings do vary: the test sees them


def test_run_verbose_shows_what_the_notebooks_print(tmp_path, env):
    run_dir = tmp_path / "run"
    res = brainvq(["run", "--profile", "smoke", "--only", "01", "--verbose", "--run-dir", run_dir], env,
                  tmp_path, timeout=400)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    assert "profile smoke; run directory" in res.stdout + res.stderr
    assert "[1/1] 01_data_exploration done in" in res.stdout


# ----------------------------------------------------------------------------- bench, help
def test_bench_unknown_lists_known(tmp_path, env, capsys):
    assert cli.main(["bench", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error:") and "nosuch" in err and "known:" in err
    known = sorted(p.stem[len("bench_"):] for p in (PROJ_ROOT / "bench").glob("bench_*.py"))
    for name in known:
        assert name in err
    if not known:
        assert err.endswith("known: none")


def test_help_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "synth", "bench"):
        assert command in out


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "usage" in capsys.readouterr().err

