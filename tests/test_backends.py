"""The backend-agnostic tests again, under JAX, in a fresh process.

Keras fixes its backend at import, so this file reruns the model, loss and training
tests in a subprocess with KERAS_BACKEND=jax and reports its failures.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

BACKEND_AGNOSTIC = ["test_vqvae.py", "test_losses.py", "test_training.py", "test_prior.py", "test_sampling.py",
                    "test_tensorboard.py"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs the JAX pass from the TensorFlow session")
def test_model_tests_pass_under_jax():
    pytest.importorskip("jax")
    here = Path(__file__).parent
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:nbval", "-o", "addopts=", "-p", "no:cacheprovider",
           *[str(here / f) for f in BACKEND_AGNOSTIC]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=here.parent)
    tail = "\n".join(done.stdout.splitlines()[-40:])
    assert done.returncode == 0, f"tests under KERAS_BACKEND=jax failed:\n{tail}\n{done.stderr[-1500:]}"
    assert " passed" in tail and " failed" not in tail
