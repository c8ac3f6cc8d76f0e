"""The Colab setup cell (brainvq_utils/colab.py): what it installs and keeps, the precision it
picks, the notebooks' copies of the cell, and (slow) the cell run in a fresh virtual environment
that stands for Colab, followed by notebook 01 on the smoke profile."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from brainvq_utils import colab

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PROTECTED = ("tensorflow", "keras", "numpy", "matplotlib")   # Colab's own: the cell must keep them
A100 = "NVIDIA A100-SXM4-40GB, 8.0\n"
T4 = "Tesla T4, 7.5\n"


# ----------------------------------------------------------------------------- requirements
def versions(**installed):
    return lambda name: installed.get(name.replace("-", "_"))


def test_check_requirements_splits_satisfied_too_old_and_missing():
    unsatisfied, kept = colab.check_requirements(
        ["keras>=3.5", "numpy>=1.26", "nilearn>=0.10.3", "scikit-learn>=1.3", "old-thing>=1; python_version<'3'"],
        versions(keras="3.10.0", numpy="1.21.6", scikit_learn="1.6.1"))
    assert unsatisfied == ["numpy>=1.26", "nilearn>=0.10.3"]           # too old; missing
    assert kept == [("keras", "3.10.0"), ("scikit-learn", "1.6.1")]    # the marker skips old-thing


def test_without_packaging_an_installed_distribution_counts_as_satisfied(monkeypatch):
    monkeypatch.setattr(colab, "Requirement", None)
    unsatisfied, kept = colab.check_requirements(["numpy>=1.26", "nilearn>=0.10.3"], versions(numpy="1.21.6"))
    assert unsatisfied == ["nilearn>=0.10.3"] and kept == [("numpy", "1.21.6")]
    assert colab._constraints(kept) == ""   # nothing pinned without packaging to check the versions


def test_unsatisfied_requirements_reads_the_pyproject():
    everything = colab.project_requirements(REPO)
    assert "tensorflow>=2.16" in everything and "keras>=3.5" in everything
    assert colab.unsatisfied_requirements(REPO, lambda name: None) == everything
    assert colab.unsatisfied_requirements(REPO, lambda name: "999.0") == []
    assert colab.unsatisfied_requirements(REPO) == []   # this environment has the project installed


def test_what_is_kept_is_pinned_as_constraints():
    assert colab._constraints([("tensorflow", "2.19.0"), ("weird", "not a version")]) == "tensorflow==2.19.0\n"


def test_install_keeps_what_is_installed(tmp_path, monkeypatch, capsys):
    """pip installs the project with --no-deps, then only what is missing or too old, with what
    is kept pinned; the clone goes onto sys.path (the slow test below runs pip for real)."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["keras>=3.5", "numpy>=1.26", "nilearn>=0.10.3"]\n')
    calls = []
    monkeypatch.setattr(colab, "_pip", lambda *args: calls.append(
        [Path(a).read_text() if a.endswith(".txt") else a for a in args]))
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = colab.install(tmp_path, versions(keras="3.10.0", numpy="1.21.6"))
    assert calls[0] == ["install", "-q", "--disable-pip-version-check", "--no-deps", "-e", str(tmp_path)]
    assert calls[1] == ["install", "-q", "--disable-pip-version-check", "-c", "keras==3.10.0\n",
                        "numpy>=1.26", "nilearn>=0.10.3"]
    assert len(calls) == 2 and sys.path[0] == str(tmp_path)
    assert result == {"installed": ["numpy>=1.26", "nilearn>=0.10.3"], "kept": [("keras", "3.10.0")]}
    out = capsys.readouterr().out
    assert "installed: numpy>=1.26, nilearn>=0.10.3\nkept: keras 3.10.0\n" in out
    assert "upgraded numpy>=1.26" in out and "restart" in out   # this process has numpy imported

    calls.clear()
    colab.install(tmp_path, versions(keras="3.10.0", numpy="2.0.2", nilearn="0.11.0"))
    assert len(calls) == 1 and "--no-deps" in calls[0]
    assert "installed: nothing but the project itself" in capsys.readouterr().out


def test_the_module_imports_the_standard_library_only():
    """The cell loads colab.py before anything is installed: run it with no site-packages at all
    (python -S), where packaging is missing too."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        before = set(sys.modules)
        spec = importlib.util.spec_from_file_location("brainvq_colab", {str(REPO / "brainvq_utils" / "colab.py")!r})
        colab = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(colab)
        extra = {{m.split(".")[0] for m in set(sys.modules) - before}} - set(sys.stdlib_module_names)
        assert not extra, extra
        assert colab.Requirement is None
        print(colab.check_requirements(["numpy>=1.26", "nope>=1"], {{"numpy": "1.0"}}.get))
    """)
    res = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(['nope>=1'], [('numpy', '1.0')])"


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("answer,precision,words", [
    (A100, "mixed_bfloat16", ["NVIDIA A100-SXM4-40GB", "compute capability 8.0", "bfloat16"]),
    ("NVIDIA A100-SXM4-40GB, 8.0\nNVIDIA A100-SXM4-40GB, 8.0\n", "mixed_bfloat16", ["A100"]),
    ("NVIDIA L4, 8.9\n", "mixed_bfloat16", ["L4"]),
    (T4, "float32", ["Tesla T4", "7.5", "no bfloat16", "float32"]),
    ("Tesla V100-SXM2-16GB, 7.0\n", "float32", ["V100"]),
    ("Some GPU, [N/A]\n", "float32", ["unknown"]),
    (None, None, ["no GPU", "profile"]),
    ("", None, ["no GPU"]),
])
def test_precision_follows_the_gpu(answer, precision, words, capsys):
    environ = {"OTHER": "1"}
    assert colab.select_precision(lambda: answer, environ) == precision
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and all(word in line for word in words), line
    if precision is None:
        assert environ == {"OTHER": "1"}   # the profile's choice stands
    else:
        assert environ == {"OTHER": "1", "BRAINVQ_PRECISION": precision}


def test_a_bad_precision_in_the_environment_names_the_variable(monkeypatch):
    from brainvq_utils.config import load_params
    from brainvq_utils.errors import BrainVQError
    monkeypatch.setenv(colab.PRECISION_ENV, "half")
    with pytest.raises(BrainVQError, match="prior_precision='half' is not known.*BRAINVQ_PRECISION"):
        load_params("smoke")


def test_the_chosen_precision_is_the_prior_precision_default(monkeypatch):
    from brainvq_utils.config import load_params
    monkeypatch.setenv("BRAINVQ_PRECISION", "mixed_bfloat16")
    assert load_params("smoke")["prior_precision"] == "mixed_bfloat16"
    assert load_params("smoke", {"prior_precision": "float32"})["prior_precision"] == "float32"


def test_no_nvidia_smi_means_no_gpu(monkeypatch):
    monkeypatch.setattr(colab, "GPU_QUERY", ["brainvq-no-such-program", "--query-gpu=name"])
    assert colab.query_gpu() is None


# ----------------------------------------------------------------------------- the cell
def test_the_cell_holds_the_repo_url_default():
    cell = colab.setup_cell_source()
    assert colab.REPO_URL.startswith("https://github.com/")
    assert f'os.environ.get("BRAINVQ_REPO", "{colab.REPO_URL}")' in cell
    assert cell.count("https://") == 1 and "git+" not in cell
    assert "sys.path" not in cell   # test_notebooks_format: the notebooks import the installed package
    compile(cell, "setup-cell", "exec")


def test_the_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "google.colab" not in sys.modules
    exec(compile(colab.setup_cell_source(), "setup-cell", "exec"), {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_the_setup_cell_and_badge(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert cells[1]["cell_type"] == "code" and "".join(cells[1]["source"]) == colab.setup_cell_source(), \
        f"{path.name}: the setup cell differs from colab.setup_cell_source(); run python brainvq_utils/colab.py"
    intro = "".join(cells[0]["source"])
    assert colab.badge_markdown(path.stem) in intro
    assert colab.badge_url(path.stem) == \
        f"https://colab.research.google.com/github/brainvq/brainvq/blob/main/notebooks/{path.name}"


def test_update_notebooks_has_nothing_left_to_change(tmp_path):
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / path.name)
    assert colab.update_notebooks(tmp_path) == []


# ----------------------------------------------------------------------------- Colab in a venv
DRIVER = r'''
import importlib, importlib.metadata, json, os, sys
import google.colab  # noqa: F401  (Colab's kernel has it imported)

cell, report_path, protected = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
exec(compile(open(cell).read(), "setup-cell", "exec"), {})

import brainvq_utils
report = {"brainvq_utils": brainvq_utils.__file__, "precision": os.environ.get("BRAINVQ_PRECISION"),
          "versions": {n: importlib.metadata.version(n) for n in protected},
          "dists": {n: str(importlib.metadata.distribution(n).locate_file("")) for n in protected},
          "modules": {n: importlib.import_module(n).__file__ for n in protected}}

import nbformat, papermill
nb = nbformat.read("brainvq/notebooks/01_data_exploration.ipynb", as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import json, sys, brainvq_utils\nfrom brainvq_utils.config import load_params\n"
    "print('PROBE', json.dumps({'executable': sys.executable, 'brainvq_utils': brainvq_utils.__file__, "
    "'prior_precision': load_params('smoke')['prior_precision']}))"))
nbformat.write(nb, "01-probe.ipynb")
papermill.execute_notebook("01-probe.ipynb", "01-out.ipynb", parameters={"profile": "smoke"},
                           kernel_name="brainvq-colab", cwd="brainvq/notebooks", progress_bar=False)
out = nbformat.read("01-out.ipynb", as_version=4)
probe = "".join(o.get("text", "") for o in out.cells[-1].outputs)
report["kernel"] = json.loads(probe.split("PROBE", 1)[1])
json.dump(report, open(report_path, "w"))
'''


def _git(*args, cwd):
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout


def local_clone(tmp: Path) -> Path:
    """A repository holding this working tree's files (tracked and untracked, not ignored), so
    that the test sees uncommitted changes and works in a clean CI clone alike."""
    origin = tmp / "origin"
    files = _git("ls-files", "-z", "-co", "--exclude-standard", cwd=REPO).split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():   # listed but deleted in the working tree: left out
            (origin / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, origin / name)
    _git("init", "-q", "-b", "main", cwd=origin)
    _git("add", "-A", cwd=origin)
    _git("commit", "-q", "-m", "snapshot", cwd=origin)
    return origin


def site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib")))


def colab_stand_in(tmp: Path) -> tuple[Path, Path, Path]:
    """A fresh venv whose preinstalled packages are this environment's (less brainvq itself),
    as Colab's are: a folder of links to them, appended to the venv's path by a .pth file, so
    that what pip installs lands in the venv's own site-packages, ahead of them."""
    preinstalled = tmp / "preinstalled"
    preinstalled.mkdir()
    for site in site_dirs():
        for entry in site.iterdir():
            if entry.name.startswith(("brainvq", "__editable__", "__pycache__")) or entry.suffix == ".pth":
                continue
            if not (preinstalled / entry.name).exists():
                (preinstalled / entry.name).symlink_to(entry)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip())
    (own / "colab-preinstalled.pth").write_text(f"{preinstalled}\n")
    (own / "google" / "colab").mkdir(parents=True)
    (own / "google" / "colab" / "__init__.py").write_text('"""Stand-in for Colab\'s google.colab."""\n')
    return venv, own, preinstalled


def fake_nvidia_smi(tmp: Path, answer: str) -> Path:
    bin_dir = tmp / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{answer}'\n")
    script.chmod(0o755)
    return bin_dir


def _under(path, folder) -> bool:
    """Whether path lies in folder, links not followed (the preinstalled packages are links)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or os.name != "posix", reason="needs git and a POSIX venv")
def test_setup_cell_in_a_colab_stand_in_then_notebook_01(tmp_path):
    assert colab.unsatisfied_requirements(REPO) == [], "this environment lacks a requirement of the project"
    ours = {p.name for site in site_dirs() for p in site.iterdir() if p.name.startswith(("brainvq", "__editable__"))}
    origin = local_clone(tmp_path)
    venv, own_site, preinstalled = colab_stand_in(tmp_path)
    python = venv / "bin" / "python"

    # The stand-in works as Colab would: inherited packages import, pip sees them, google.colab imports.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "BRAINVQ_PRECISION")}
    probe = "import google.colab, google.protobuf, tensorflow, keras; print(keras.__file__)"
    res = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                         env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert res.returncode == 0 and _under(res.stdout.strip(), preinstalled), res.stderr[-2000:]
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True,
                            env=env)
    listed = {d["name"].lower(): d["version"] for d in json.loads(listed.stdout)}
    for name in PROTECTED:
        assert listed.get(name) == importlib.metadata.version(name), name
    assert "brainvq" not in listed
    subprocess.run([python, "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "brainvq-colab"],
                   check=True, capture_output=True, env=env)

    content = tmp_path / "content"   # Colab's working directory
    content.mkdir()
    cell = tmp_path / "setup-cell.py"
    notebook = json.loads((REPO / "notebooks" / "01_data_exploration.ipynb").read_text(encoding="utf-8"))
    cell.write_text("".join(notebook["cells"][1]["source"]))   # the notebook's copy of the cell, as Colab runs it
    env.update(BRAINVQ_REPO=origin.as_uri(), VIRTUAL_ENV=str(venv), PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=os.pathsep.join([str(fake_nvidia_smi(tmp_path, A100)), str(venv / "bin"), os.environ["PATH"]]),
               BRAINVQ_DATA_DIR=os.environ.get("BRAINVQ_DATA_DIR", str(tmp_path / "data")),  # conftest: shared
               BRAINVQ_RUNS_DIR=str(tmp_path / "runs"), BRAINVQ_RUN_DIR=str(tmp_path / "runs" / "notebooks-smoke"),
               BRAINVQ_PROFILE="smoke", TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    report_path = tmp_path / "report.json"
    res = subprocess.run([python, driver, cell, report_path, ",".join(PROTECTED)], cwd=content, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    report = json.loads(report_path.read_text())
    clone = content / "brainvq"

    # What the cell said: nothing replaced, Colab's packages kept, the A100's precision.
    assert "installed: nothing but the project itself" in res.stdout, res.stdout
    kept = next(line for line in res.stdout.splitlines() if line.startswith("kept: "))
    for name in PROTECTED:
        assert f"{name} {importlib.metadata.version(name)}" in kept
    assert "GPU: NVIDIA A100-SXM4-40GB (compute capability 8.0, bfloat16)" in res.stdout
    assert report["precision"] == "mixed_bfloat16"

    # Colab's TensorFlow, Keras, numpy and matplotlib are the ones it had.
    for name in PROTECTED:
        assert report["versions"][name] == importlib.metadata.version(name), name
        assert _under(report["dists"][name], preinstalled), (name, report["dists"][name])
        assert _under(report["modules"][name], preinstalled), (name, report["modules"][name])
    installed_here = sorted(p.name for p in own_site.iterdir() if p.name.endswith(".dist-info"))
    assert installed_here == ["brainvq-0.1.0.dist-info"], installed_here

    # The package comes from the clone: in the setup cell's process and in notebook 01's kernel.
    assert _under(report["brainvq_utils"], clone), report["brainvq_utils"]
    kernel = report["kernel"]
    assert Path(kernel["executable"]).parent == venv / "bin", kernel
    assert _under(kernel["brainvq_utils"], clone), kernel
    assert kernel["prior_precision"] == "mixed_bfloat16"
    assert (tmp_path / "runs" / "notebooks-smoke").is_dir()

    # This environment's own install of brainvq is untouched.
    assert ours == {p.name for site in site_dirs() for p in site.iterdir()
                    if p.name.startswith(("brainvq", "__editable__"))}
