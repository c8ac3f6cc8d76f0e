"""A clean first screen (brainvq_utils.quiet): the native libraries' start-up chatter is held back in
notebook kernels and on terminals, and nothing else is: an unknown warning or error of the same
libraries, a Python exception, print to stderr."""

import json
import os
import subprocess
import sys

import pytest

from brainvq_utils.quiet import is_chatter

CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795962602.368122     460 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1795962610.197752     460 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1795331450.853834   21853 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
    "W0000 00:00:1795331450.853834   21853 mkl_util.h:123] oneDNN supports DT_INT32 only on platforms with AVX-512. Falling back to the default Eigen-based implementation if present.",
    "E0000 00:00:1733862301.123456    1234 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered",
    "W0000 00:00:1733862301.123456    1234 py_utils.cc:38] TF-TRT Warning: Could not find TensorRT",
]
REAL = [
    "E0000 00:00:1795962610.197752     460 bfc_allocator.cc:485] Allocator (GPU_0_bfc) ran out of memory trying to allocate 2.00GiB",
    "W0000 00:00:1795962610.197752     460 op_level_cost_estimator.cc:699] Error in PredictCost() for the op: Conv2D",
    "/usr/lib/python3/site-packages/keras/src/trainer.py:12: UserWarning: the dataset ran out of data",
    "Traceback (most recent call last):",
    "ValueError: something the user must fix",
]


def test_chatter_is_told_from_what_a_user_must_see():
    assert all(is_chatter(line) for line in CHATTER)
    assert not any(is_chatter(line) for line in REAL)


FILTERED = """
import os, sys
from brainvq_utils import quiet
assert quiet.filter_native_stderr()
for line in sys.argv[1:]:
    os.write(2, (line + "\\n").encode())
import time; time.sleep(0.5)
print(len(quiet.STARTUP_LINES))
"""


def test_the_kernel_filter_holds_back_the_chatter_and_passes_everything_else(tmp_path):
    log = tmp_path / "run.log"
    env = {**os.environ, "BRAINVQ_LOG_FILE": str(log)}
    env.pop("BRAINVQ_VERBOSE", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run([sys.executable, "-c", FILTERED, *CHATTER, *REAL], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    shown = done.stderr.splitlines()
    assert all(line in shown for line in REAL) and not any(line in shown for line in CHATTER)
    assert int(done.stdout.split()[-1]) >= len(CHATTER)
    assert all(line in log.read_text() for line in CHATTER)              # a headless run keeps them in run.log
    verbose = subprocess.run([sys.executable, "-c", FILTERED.replace("assert quiet.", "quiet."), *CHATTER],
                             capture_output=True, text=True, env={**env, "BRAINVQ_VERBOSE": "1"}, timeout=120)
    assert all(line in verbose.stderr for line in CHATTER)                # BRAINVQ_VERBOSE=1 shows everything


NOTEBOOK_CELLS = [
    "from brainvq_utils import pipeline\npipeline.print_versions();",
    "import numpy as np\nfrom brainvq_utils.vqvae import build_vqvae\n"
    "m = build_vqvae(32, num_codes=8, code_dim=4, channels=16, res_blocks=1)\n"
    "print(np.asarray(m.reconstruct(np.zeros((1, 32, 32, 1), np.float32))).shape)",
    "from brainvq_utils.priors import build_prior\nimport numpy as np\n"
    "p = build_prior('gated', 8, (4, 4), channels=8, num_layers=2)\nprint(p({'codes': np.zeros((1, 4, 4), np.int32)}).shape)",
    "raise ValueError('a real error must still show')",
]


@pytest.mark.slow
def test_a_notebook_shows_no_start_up_chatter_and_still_shows_a_real_error(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS]
    env_before = dict(os.environ)
    os.environ.pop("BRAINVQ_VERBOSE", None)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
        with pytest.raises(CellExecutionError, match="a real error must still show"):
            client.execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("name") == "stderr"], json.dumps(outputs)[:2000]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "computes on: CPU" in text and "(1, 32, 32, 1)" in text and "(1, 4, 4, 8)" in text
    errors = [o for o in nb.cells[-1].outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "ValueError"
