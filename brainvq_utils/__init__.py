"""brainvq_utils: shared code for the brainvq notebooks.

Importing the package registers its custom Keras layers and models, so that
``keras.saving.load_model("vqvae.keras")`` works after ``import brainvq_utils``.
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides what matters in notebooks and
# on the command line: it is kept in quiet.STARTUP_LINES (and the log of a `brainvq run`); set
# BRAINVQ_VERBOSE=1 (or TF_CPP_MIN_LOG_LEVEL=0) to see it again.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .progress import in_notebook as _in_notebook  # noqa: E402
from .quiet import filter_native_stderr as _filter_native_stderr  # noqa: E402
from .quiet import quiet_native_startup as _quiet_native_startup  # noqa: E402

if _in_notebook():   # a kernel: the first model call's chatter stays out of the cells too, for its whole life
    _filter_native_stderr()

if _os.environ.get("BRAINVQ_VIRTUAL_CPUS"):   # split the CPU into devices before the backend starts
    from .devices import virtual_cpus as _virtual_cpus  # noqa: E402

    with _quiet_native_startup():
        _virtual_cpus(_os.environ["BRAINVQ_VIRTUAL_CPUS"])

with _quiet_native_startup():
    from . import losses, priors, sampling, vqvae  # noqa: E402,F401  (registers the custom Keras objects for load_model)
