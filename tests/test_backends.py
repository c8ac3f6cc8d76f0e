"""The backend-agnostic tests again, under JAX, in a fresh process.

Keras fixes its backend at import, so the model, loss and training tests run again in a subprocess
with KERAS_BACKEND=jax. ``conftest.py`` starts that process as soon as the tests are collected, so
that it runs beside the rest, and puts this test last; the test waits for it and reports its failures.
"""

import keras
import pytest
from conftest import JAX_PASS, start_jax_pass


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs the JAX pass from the TensorFlow session")
def test_model_tests_pass_under_jax(request):
    pytest.importorskip("jax")
    started = request.config.stash.get(JAX_PASS, None) or start_jax_pass()
    proc = started["proc"]
    try:
        proc.wait(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    started["file"].flush()
    lines = started["log"].read_text().splitlines()
    tail = "\n".join(lines[-40:])
    assert proc.returncode == 0, f"tests under KERAS_BACKEND=jax failed:\n{tail}"
    assert " passed" in tail and " failed" not in tail
