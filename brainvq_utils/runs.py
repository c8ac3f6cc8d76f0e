"""Run directories: where one pipeline run keeps everything it made.

``runs/<name>/`` holds config, models, code maps, ``metrics.json``, ``figures/``,
executed notebooks, logs and checkpoints. Notebooks hand artefacts to each other
through it: each reads what the one before wrote, and says which notebook to run
when something is missing.
"""

from __future__ import annotations

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


def default_run_dir(profile: str = "demo") -> Path:
    """The run directory notebooks share when run one by one (JupyterLab, nbval)."""
    env = os.environ.get("BRAINVQ_RUN_DIR")
    return Path(env).expanduser() if env else paths.runs_dir() / f"notebooks-{profile}"


def new_run_dir(name: str | None = None, profile: str = "demo", overwrite: bool = False) -> Path:
    """Make a fresh run directory; never reuse a non-empty one unless ``overwrite``."""
    if name is None:
        name = f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(name) if os.sep in str(name) or Path(name).is_absolute() else paths.runs_dir() / name
    if run_dir.exists() and not run_dir.is_dir():
        raise BrainVQError(f"run directory {run_dir} is a file; choose a folder name")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise BrainVQError(f"run directory {run_dir} already holds files; choose another name "
                               f"or pass --overwrite to replace the run in it")
        if not (run_dir / "run.json").exists():
            raise BrainVQError(f"{run_dir} holds files but no run.json, so it is not a brainvq run; "
                               f"--overwrite only replaces runs, so choose another folder")
        shutil.rmtree(run_dir)
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    return run_dir


def write_json(path, data) -> None:
    """Write JSON atomically (a killed process never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
