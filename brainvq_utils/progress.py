"""Progress: what a long step is doing, shown where the person waiting on it looks.

- **Interactive** (JupyterLab, Colab, a terminal): Keras' live progress bar while a model
  trains (``keras_verbose() == 1``) and ``tqdm.auto`` bars (a widget in JupyterLab) while
  codes are drawn or a cohort is built.
- **Headless** (``brainvq run``, papermill, nbval, CI: ``BRAINVQ_HEADLESS=1``): one line per
  epoch in the notebook's output (``keras_verbose() == 2``) and no bars, so stored notebooks
  stay small.
- Under ``brainvq run`` every notebook's kernel also writes one short status line to the file
  named by ``BRAINVQ_PROGRESS_FILE``; the command line reads it to move its one progress line
  per notebook (``runner.run_notebooks``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

HEADLESS_ENV = "BRAINVQ_HEADLESS"
FILE_ENV = "BRAINVQ_PROGRESS_FILE"


def headless() -> bool:
    """True in runs nobody watches cell by cell (``BRAINVQ_HEADLESS=1``)."""
    return os.environ.get(HEADLESS_ENV, "").strip().lower() in ("1", "true", "yes")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, papermill, nbval)."""
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell else None
    return ipython is not None and type(ipython).__name__ in ("ZMQInteractiveShell", "Shell")


def watched_notebook() -> bool:
    """A kernel that a person watches: one that JupyterLab or Jupyter Server started (they set
    ``JPY_SESSION_NAME``), or Colab's. A kernel that papermill, nbclient or nbval started has
    neither, so it counts as headless even without ``BRAINVQ_HEADLESS``."""
    return in_notebook() and ("JPY_SESSION_NAME" in os.environ or "google.colab" in sys.modules)


def interactive() -> bool:
    """Whether live bars help: someone watches this kernel or terminal, and it is not headless."""
    if headless():
        return False
    return watched_notebook() or (not in_notebook() and sys.stdout.isatty())


def keras_verbose() -> int:
    """``verbose`` for ``model.fit``: 1 (the live bar) interactively, 2 (a line per epoch) headless."""
    return 1 if interactive() else 2


def report(text: str) -> None:
    """Write ``text`` as the current status line where ``brainvq run`` reads it (if it does).

    Written to a temporary name and renamed, so the reader never sees half a line; an
    unwritable file is ignored (progress must never stop a run)."""
    path = os.environ.get(FILE_ENV)
    if not path:
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(" ".join(str(text).split()) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def read(path) -> str:
    """The status line last written to ``path`` ('' if none)."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


class Bar:
    """A progress counter that is a ``tqdm.auto`` bar when someone watches (``show``) and a
    status line for ``brainvq run`` (``report``) in any case, at most every ``every_s`` seconds.

    ``Bar(total, "sampling", "row")``; ``bar.update(1)``; ``bar.close()`` (or use ``with``)."""

    def __init__(self, total: int, desc: str, unit: str = "it", show: bool | None = None, every_s: float = 1.0):
        self.total, self.desc, self.unit, self.done = int(total), desc, unit, 0
        self.every_s, self._last, self._first = every_s, -math.inf, None
        self._bar = None
        if interactive() if show is None else show:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=self.total, desc=desc, unit=unit)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._first is None:      # the rate is timed from the first update on: it excludes compiling
            self._first = (time.perf_counter(), self.done)
        if self._bar is not None:
            self._bar.update(n)
        now = time.perf_counter()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            report(self.status())

    def status(self) -> str:
        left = ""
        if self._first is not None and self._first[1] < self.done < self.total:
            per_unit = (time.perf_counter() - self._first[0]) / (self.done - self._first[1])
            left = f", about {per_unit * (self.total - self.done):.0f} s left"
        return f"{self.desc}: {self.done}/{self.total} {self.unit}s{left}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
