"""Test-session settings shared by unit tests and the notebooks run by nbval.

Notebook kernels inherit this process's environment, so setting it here (before any
kernel starts) makes every notebook use the smoke profile and throw-away folders.
"""

import os
import tempfile

_SESSION_DIR = tempfile.mkdtemp(prefix="brainvq-tests-")
os.environ.setdefault("BRAINVQ_PROFILE", "smoke")
os.environ.setdefault("BRAINVQ_DATA_DIR", os.path.join(_SESSION_DIR, "data"))
os.environ.setdefault("BRAINVQ_RUNS_DIR", os.path.join(_SESSION_DIR, "runs"))
os.environ.setdefault("BRAINVQ_RUN_DIR", os.path.join(_SESSION_DIR, "runs", "notebooks-smoke"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# Headless: Keras prints a line per epoch and no bars, as in `brainvq run` (brainvq_utils.progress).
os.environ.setdefault("BRAINVQ_HEADLESS", "1")
