"""Run directories: where one pipeline run keeps everything it made.

``runs/<name>/`` holds config, models, code maps, ``metrics.json``, ``figures/``,
executed notebooks, logs and checkpoints. Notebooks hand artefacts to each other
through it: each reads what the one before wrote, and says which notebook to run
when something is missing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import paths
from .errors import BrainVQError

# Which notebook makes which artefact, for "run ... first" messages.
PRODUCERS = {
    "dataset.json": "01_data_exploration",
    "vqvae.keras": "02_vqvae_training",
    "prior.keras": "04_pixelcnn_training",
    "codes.npz": "04_pixelcnn_training",
}

# What each notebook makes besides its executed copy (<run_dir>/<name>.ipynb) and its figures
# (figures/<first two letters of its name>_*.png): files and folders, and metrics.json sections.
# `brainvq run --resume --overwrite` removes them before it runs the notebook again with changed
# parameters, so that nothing made with the old ones (a checkpoint above all) is taken up again.
OUTPUTS = {
    "01_data_exploration": (["dataset.json"], ["dataset"]),
    "02_vqvae_training": (["vqvae.keras", "vqvae_config.json", "checkpoints/vqvae_last.keras",
                           "checkpoints/vqvae_state.json", "logs/vqvae"], ["vqvae"]),
    "03_codebook_inspection": ([], ["codebook"]),
    "04_pixelcnn_training": (["codes.npz", "prior.keras", "prior_config.json", "checkpoints/prior_last.keras",
                              "checkpoints/prior_state.json", "logs/prior"], ["prior"]),
    "05_generation_and_evaluation": ([], ["generation"]),
}


def default_run_dir(profile: str = "demo") -> Path:
    """The run directory notebooks share when run one by one (JupyterLab, nbval)."""
    env = os.environ.get("BRAINVQ_RUN_DIR")
    return Path(env).expanduser() if env else paths.runs_dir() / f"notebooks-{profile}"


LOCK_FILE = ".brainvq.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process
        return True
    return True


def lock_holder(run_dir) -> int | None:
    """The process id of the live ``brainvq run`` that holds ``run_dir``, or None."""
    try:
        pid = int((Path(run_dir) / LOCK_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and pid != os.getpid() and _alive(pid) else None


def refuse_if_in_use(run_dir) -> None:
    pid = lock_holder(run_dir)
    if pid:
        raise BrainVQError(f"run directory {run_dir} is in use by another brainvq run (process {pid}); wait for "
                           f"it to finish, or choose another --run-dir")


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold ``run_dir`` for this process (``<run_dir>/.brainvq.lock`` holds its pid): a second
    ``brainvq run`` into it refuses, naming this process; a lock left by a killed run is taken over."""
    path = Path(run_dir) / LOCK_FILE
    refuse_if_in_use(run_dir)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        try:
            os.link(tmp, path)                # atomic: fails if another process got there first
        except FileExistsError:
            refuse_if_in_use(run_dir)         # a live holder: refuse; a dead one: take it over
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(path.read_text().strip()) == os.getpid():
                path.unlink()


@contextlib.contextmanager
def writing(path):
    """Turn a failed write under ``path`` (read-only folder, full disk, ...) into a one-line error
    naming it."""
    try:
        yield
    except OSError as err:
        if isinstance(err, FileExistsError):
            raise
        hint = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk space",
                errno.EACCES: "make it writable", errno.EPERM: "make it writable",
                errno.EROFS: "use a writable disk"}.get(err.errno, "check the folder")
        raise BrainVQError(f"cannot write {path}: {err.strerror or err}; {hint} or choose another --run-dir "
                           f"(nothing written before is changed)") from None


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside ``path`` (same suffix) to write to; renamed to ``path`` when the
    block ends without error, removed otherwise, so that a killed or failed write never leaves a
    half-written file under the final name. Write errors become one-line errors (``writing``)."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def run_path(name) -> Path:
    """Where ``--run-dir NAME`` points: a path as given, or a bare name under ``runs/``."""
    return Path(name).expanduser() if os.sep in str(name) or Path(name).is_absolute() else paths.runs_dir() / name


def discard_outputs(run_dir, names) -> list[str]:
    """Remove what the notebooks ``names`` made in ``run_dir`` (``OUTPUTS``, their executed copies,
    figures and metrics sections); return what was removed, relative to ``run_dir``."""
    run_dir, removed = Path(run_dir), []
    sections = []
    for name in names:
        files, parts = OUTPUTS.get(name, ([], []))
        sections += parts
        targets = [run_dir / f for f in files] + [run_dir / f"{name}.ipynb"]
        targets += sorted((run_dir / "figures").glob(f"{name[:2]}_*.png"))
        for target in targets:
            with writing(target):
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                else:
                    continue
            removed.append(str(target.relative_to(run_dir)))
    metrics = read_metrics(run_dir)
    if any(s in metrics for s in sections):
        write_json(run_dir / "metrics.json", {k: v for k, v in metrics.items() if k not in sections})
        removed += [f"metrics.json:{s}" for s in sections if s in metrics]
    return removed


def new_run_dir(name: str | None = None, profile: str = "demo", overwrite: bool = False) -> Path:
    """Make a fresh run directory; never reuse a non-empty one unless ``overwrite``, and never one
    that another ``brainvq run`` is using (``run_lock``)."""
    if name is None:
        name = f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = run_path(name)
    if run_dir.exists() and not run_dir.is_dir():
        raise BrainVQError(f"run directory {run_dir} is a file; choose a folder name")
    refuse_if_in_use(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise BrainVQError(f"run directory {run_dir} already holds files; choose another name "
                               f"or pass --overwrite to replace the run in it")
        if not (run_dir / "run.json").exists():
            raise BrainVQError(f"{run_dir} holds files but no run.json, so it is not a brainvq run; "
                               f"--overwrite only replaces runs, so choose another folder")
        shutil.rmtree(run_dir)
    with writing(run_dir):
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    return run_dir


def write_json(path, data) -> None:
    """Write JSON atomically (a killed process never leaves half a file)."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise BrainVQError(f"{path} is not valid JSON ({err}); move it away and rerun the step that writes it") from None


def update_metrics(run_dir, section: str, values: dict) -> dict:
    """Set one section of ``metrics.json`` (other sections are kept)."""
    path = Path(run_dir) / "metrics.json"
    metrics = read_json(path)
    metrics[section] = values
    write_json(path, metrics)
    return metrics


def read_metrics(run_dir) -> dict:
    return read_json(Path(run_dir) / "metrics.json")


def require(run_dir, artefact: str) -> Path:
    """The path of an artefact a previous notebook made, or a one-line error."""
    path = Path(run_dir) / artefact
    if not path.exists():
        producer = PRODUCERS.get(artefact, "the notebook that makes it")
        raise BrainVQError(f"{artefact} is missing from the run directory {run_dir}: run {producer} first")
    return path
