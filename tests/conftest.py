"""Session hooks. The JAX pass of tests/test_backends.py (the model tests again under KERAS_BACKEND=jax,
in a process of its own: about 4 minutes, most of it XLA compiling on one core) starts as soon as the
tests are collected and runs beside the others; its test runs last and collects the result. A run of
the test suite uses about half of two cores on its own (kernels starting, subprocesses, a browser), so
the pass mostly fills idle time."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

JAX_PASS_TEST = "test_backends.py::test_model_tests_pass_under_jax"
JAX_PASS = pytest.StashKey[dict]()
BACKEND_AGNOSTIC = ["test_vqvae.py", "test_losses.py", "test_training.py", "test_prior.py", "test_sampling.py",
                    "test_tensorboard.py"]


def jax_pass_command() -> list[str]:
    here = Path(__file__).parent
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:nbval", "-o", "addopts=", "-p", "no:cacheprovider",
            *[str(here / f) for f in BACKEND_AGNOSTIC]]


def start_jax_pass() -> dict:
    """Start the JAX pass; its output goes to a file (a pipe could fill up and stall it)."""
    out = tempfile.NamedTemporaryFile("w+", prefix="brainvq-jax-pass-", suffix=".log", delete=False)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(jax_pass_command(), env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).parent.parent)
    return {"proc": proc, "log": Path(out.name), "file": out}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """The JAX pass's test goes last, so that the pass has run beside everything else by then."""
    last = [item for item in items if item.nodeid.endswith(JAX_PASS_TEST)]
    items[:] = [item for item in items if item not in last] + last


def pytest_collection_finish(session):
    import keras
    selected = any(item.nodeid.endswith(JAX_PASS_TEST) for item in session.items)
    if selected and keras.backend.backend() == "tensorflow" and not session.config.option.collectonly:
        try:
            import jax  # noqa: F401
        except ImportError:
            return
        session.config.stash[JAX_PASS] = start_jax_pass()


def pytest_sessionfinish(session):
    started = session.config.stash.get(JAX_PASS, None)
    if started and started["proc"].poll() is None:   # interrupted before its test ran
        started["proc"].kill()
        started["proc"].wait()
    if started:
        started["file"].close()
        started["log"].unlink(missing_ok=True)
