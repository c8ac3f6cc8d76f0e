"""The native libraries' start-up chatter, kept off the screen where nobody can act on it.

TensorFlow, absl, CUDA and oneDNN print lines to file descriptor 2 as they load and at the first
model call ("All log messages before absl::InitializeLog()", "Could not find cuda drivers", "failed
call to cuInit: ... UNKNOWN ERROR (303)", "oneDNN custom operations are on", on Colab "Unable to
register cuDNN factory", "TF-TRT Warning: Could not find TensorRT"). A beginner reads "CUDA error" as
"this is broken"; none of them asks for anything. They are recognised line by line (``is_chatter``:
absl's information lines, and a list of known warnings and errors) and kept in ``STARTUP_LINES``; a
headless run (``brainvq run``) appends them to its ``run.log``. Everything else written to file
descriptor 2, an unknown warning or error from the same libraries included, is shown as before.

- ``quiet_native_startup()``: around an import; on a terminal, nothing but the chatter is held back,
  and if the import fails everything is shown.
- ``filter_native_stderr()``: in a notebook kernel (JupyterLab, Colab, papermill, nbval), for the
  kernel's whole life, so that the chatter of the first model call stays out of the cells too.

``BRAINVQ_VERBOSE=1`` (``brainvq run --verbose``) or ``TF_CPP_MIN_LOG_LEVEL=0`` shows everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading

STARTUP_LINES: list[str] = []   # the chatter held back, in order
VERBOSE_ENV = "BRAINVQ_VERBOSE"
LOG_ENV = "BRAINVQ_LOG_FILE"      # a headless run's run.log: the kernels append the chatter there

# absl's log-line prefix: severity, date, time, thread, file:line]
_ABSL = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] ?(.*)$")
# What the libraries print at start-up or at the first model call that asks nothing of anyone. A warning
# or error line not listed here is shown.
KNOWN_NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"oneDNN custom operations are on",
    r"oneDNN supports DT_\w+ only on platforms with AVX-512",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags",
    r"rebuild TensorFlow with the appropriate compiler flags",
    r"Unable to register (cuDNN|cuFFT|cuBLAS) factory",
    r"Attempting to register factory for plugin \w+ when one has already been registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"computation placer already registered",
    r"Unable to initialize backend '\w+'",
    r"An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed",
]))


def verbose() -> bool:
    return (os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")
            or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0")


def is_chatter(line: str) -> bool:
    """Whether a line from file descriptor 2 is native start-up chatter: absl's information lines
    ("I0000 ...]"), and the known warnings and errors of ``KNOWN_NOISE``."""
    m = _ABSL.match(line)
    if m and m.group(1) == "I":
        return True
    return bool(KNOWN_NOISE.search(m.group(2) if m else line))


def _keep(lines) -> None:
    STARTUP_LINES.extend(lines)
    path = os.environ.get(LOG_ENV)
    if path and lines:
        try:
            with open(path, "a") as log:
                log.write("".join(f"{line}\n" for line in lines))
        except OSError:
            pass


@contextlib.contextmanager
def quiet_native_startup():
    """Hold back what native libraries print to file descriptor 2 while they load: the chatter goes to
    ``STARTUP_LINES``, any other line is written back at once, and if the import fails everything is.
    ``brainvq run`` writes its own to the run's log (or, with ``--verbose``, the terminal)."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            lines = buffer.read().decode(errors="replace").splitlines()
            chatter = [] if failed else [line for line in lines if is_chatter(line)]
            _keep(chatter)
            shown = [line for line in lines if line not in chatter]
            if shown:
                os.write(2, ("\n".join(shown) + "\n").encode())


_FILTER: dict = {}


def filter_native_stderr() -> bool:
    """From now on, hold back the chatter written to file descriptor 2 by anything in this process, and
    pass every other line through to where file descriptor 2 went before (in a kernel: the cell's
    output). Lines are read by a thread from a pipe put in place of file descriptor 2. Returns whether
    the filter is on (it is not with ``BRAINVQ_VERBOSE=1``); calling it again changes nothing."""
    if verbose():
        return False
    if _FILTER:
        return True
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):
        return False
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        pending = b""
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            passed = []
            for raw in lines:
                text = raw.decode(errors="replace")
                if is_chatter(text):
                    _keep([text])
                else:
                    passed.append(raw + b"\n")
            if passed:
                os.write(original, b"".join(passed))
        if pending:
            os.write(original, pending)

    thread = threading.Thread(target=pump, name="brainvq-native-stderr", daemon=True)
    thread.start()
    _FILTER.update(original=original, thread=thread)
    return True
