"""The one place that knows where the project's folders are.

Each folder can be moved with an environment variable, so nothing depends on the
current working directory (a notebook started from ``notebooks/`` and a test started
from the repository root see the same paths).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJ_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Where data sets live: ``$BRAINVQ_DATA_DIR`` or ``<project>/data``."""
    return Path(os.environ.get("BRAINVQ_DATA_DIR", PROJ_ROOT / "data")).expanduser()


def runs_dir() -> Path:
    """Where run directories are made: ``$BRAINVQ_RUNS_DIR`` or ``<project>/runs``."""
    return Path(os.environ.get("BRAINVQ_RUNS_DIR", PROJ_ROOT / "runs")).expanduser()


def notebooks_dir() -> Path:
    return PROJ_ROOT / "notebooks"

