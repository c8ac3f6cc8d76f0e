"""The headless runner that ``brainvq run`` drives: papermill executes the notebooks in order into a
run directory, one moving status line per notebook on the terminal (the rest goes to ``run.log``),
the run directory held by a lock, and ``--resume`` / ``--overwrite`` of a run that was stopped.

It sits above the notebooks' wiring (``pipeline``): the notebooks never import it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import threading
import time
import traceback
from dataclasses import fields
from pathlib import Path

from . import paths
from .config import DataConfig, PriorConfig, SamplingConfig, VQVAEConfig, load_params
from .errors import BrainVQError
from .pipeline import _absolute
from .runs import discard_outputs, new_run_dir, read_json, refuse_if_in_use, run_lock, run_path, update_metrics, write_json

NOTEBOOKS = ("01_data_exploration", "02_vqvae_training", "03_codebook_inspection",
             "04_pixelcnn_training", "05_generation_and_evaluation")


LOG_FILE = "run.log"
PROGRESS_FILE = ".progress"


class _Terminal:
    """What ``brainvq run`` shows: a status line per notebook that moves (rewritten in place on
    a terminal; on a pipe or file, a new line when it changes, at most every ``every_s``
    seconds), and finished lines. Every line shown, and the status at most every ``every_s``
    seconds on a terminal, is copied into the run's log. Thread-safe (the status comes from a
    watcher thread)."""

    def __init__(self, stream, log_file=None, every_s: float = 15.0):
        self.stream, self.log_file, self.every_s = stream, log_file, every_s
        self.tty = stream.isatty()
        self._open, self._last_text, self._last_t, self._last_logged = False, "", -math.inf, -math.inf
        self._lock = threading.Lock()

    def _log(self, line):
        if self.log_file is not None:
            self.log_file.write(f"brainvq: {line}\n")
            self.log_file.flush()

    def line(self, text: str) -> None:
        """A finished line."""
        with self._lock:
            if self._open:
                self.stream.write("\r\033[K")
                self._open = False
            self.stream.write(text + "\n")
            self.stream.flush()
            self._log(text)

    def finish(self) -> None:
        """End a moving line left open (before an error message, say)."""
        with self._lock:
            if self._open:
                self.stream.write("\n")
                self.stream.flush()
                self._open = False

    def status(self, text: str) -> None:
        """The moving line."""
        with self._lock:
            if text == self._last_text:
                return
            now = time.monotonic()
            if self.tty:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                self.stream.write("\r\033[K" + text[:width])
                self.stream.flush()
                self._open = True
                if now - self._last_logged >= self.every_s:
                    self._last_logged = now
                    self._log(text)
            elif now - self._last_t >= self.every_s:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_t = now
                self._log(text)
            else:
                return
            self._last_text = text


@contextlib.contextmanager
def _quiet_terminal(log_file, verbose: bool):
    """Send everything written to file descriptors 1 and 2 (this process's and the notebook
    kernels', which inherit them: TensorFlow's, absl's, CUDA's and the kernel's start-up lines)
    to ``log_file`` (an open file); yield a stream that still reaches the terminal.
    ``verbose``: change nothing."""
    if verbose:
        yield sys.stdout
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
        try:
            os.dup2(log_file.fileno(), 1)
            os.dup2(log_file.fileno(), 2)
            with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):   # Python's streams too
                yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            terminal.close()
    finally:
        os.close(saved[0])
        os.close(saved[1])


class _Watcher:
    """A thread that passes the status line a kernel writes to ``path`` to ``show``, twice a
    second, until ``stop()`` (which waits for it)."""

    def __init__(self, path, show, every_s: float = 0.5):
        from .progress import read
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(every_s):
                text = read(path)
                if text:
                    show(text)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()


def status_interval(value=None) -> float:
    """How often ``brainvq run`` may add a status line on a pipe: ``value``, else
    ``$BRAINVQ_STATUS_EVERY_S``, else 15 s; a one-line error for a bad value."""
    value = os.environ.get("BRAINVQ_STATUS_EVERY_S", "15") if value is None else value
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds >= 0):
        raise BrainVQError(f"BRAINVQ_STATUS_EVERY_S={value!r} must be a number of seconds >= 0, e.g. 15")
    return seconds


def run_notebooks(run_dir=None, profile: str = "demo", dataset: str = "synthetic", data_dir=None,
                  overrides: dict | None = None, overwrite: bool = False, only=None,
                  verbose: bool = False, status_every_s: float | None = None) -> Path:
    """Execute the notebooks in order with papermill into the run directory; the seconds each
    took go into metrics.json (``timing``, with the ``total`` so far) as each one ends, and
    ``run.json`` records which have finished (for ``resume_notebooks``).

    The terminal shows one line per notebook that moves while it runs (the epoch and the time
    left of its training budget, the sampling), fed by what the kernel writes with
    ``progress.report``; everything else that the kernels and libraries print (papermill's log
    of every cell output included) goes to the executed notebooks and ``<run_dir>/run.log``.
    ``verbose``: show all of it on the terminal instead. ``status_every_s``: on a pipe or file
    (not a terminal), how often the moving line may add a line (``status_interval``).
    """
    status_every_s = status_interval(status_every_s)
    data_dir = _absolute(data_dir)
    load_params(profile, _param_overrides(dataset, data_dir, overrides))   # fail fast on bad parameters
    names = [n for n in _notebooks() if not only or any(n.startswith(o) for o in only)]
    if not names:
        raise BrainVQError(f"no notebooks found in {paths.notebooks_dir()}" +
                           (f" that start with {' or '.join(only)}" if only else ""))
    run_dir = new_run_dir(run_dir, profile, overwrite=overwrite)
    parameters = dict(profile=profile, dataset=dataset, data_dir=data_dir, run_dir=str(run_dir.resolve()),
                      overrides=dict(overrides or {}))
    with run_lock(run_dir):
        write_json(run_dir / "run.json", {"parameters": parameters, "notebooks": names,
                                          "started": time.strftime("%Y-%m-%d %H:%M:%S"), "finished": {}})
        return _run_locked(run_dir, names, verbose, status_every_s)


# Parameters that may change when a run is resumed: where it trains and what it logs, not what it computes
# (a checkpoint resumes on any number of devices).
RESUME_FREE = ("devices", "tensorboard")


def _param_overrides(dataset, data_dir, overrides) -> dict:
    return {**(overrides or {}), "dataset": dataset, **({"data_dir": str(data_dir)} if data_dir else {})}


def _notebooks() -> list[str]:
    return [n for n in NOTEBOOKS if (paths.notebooks_dir() / f"{n}.ipynb").exists()]


def first_reader(key: str) -> str:
    """The first notebook whose configuration reads parameter ``key``."""
    for stage, name in ((DataConfig, NOTEBOOKS[0]), (VQVAEConfig, NOTEBOOKS[1]), (PriorConfig, NOTEBOOKS[3]),
                        (SamplingConfig, NOTEBOOKS[4])):
        if key in {f.name for f in fields(stage)}:
            return name
    return NOTEBOOKS[0]


def resume_notebooks(run_dir, profile: str | None = None, dataset: str | None = None, data_dir=None,
                     overrides: dict | None = None, overwrite: bool = False, verbose: bool = False,
                     status_every_s: float | None = None) -> Path:
    """Continue a run that was killed: the notebooks that finished are not run again, the one that was
    running starts again and its training continues from the last finished epoch (``fit_resumable``'s
    checkpoints), and the rest follow.

    The run's recorded parameters are used; any given here must match them (``devices`` and
    ``tensorboard`` may change), or a one-line error names those that differ. With
    ``overwrite``, changed parameters are taken instead: the first notebook that reads one and every
    notebook after it run again, after what they made is removed (``runs.discard_outputs``).
    """
    status_every_s = status_interval(status_every_s)
    run_dir = run_path(run_dir)
    if not run_dir.is_dir():
        raise BrainVQError(f"there is no run directory {run_dir} to resume; give the folder of a run "
                           f"(`ls {paths.runs_dir()}`)")
    record = read_json(run_dir / "run.json")
    if not record.get("parameters"):
        raise BrainVQError(f"{run_dir} holds no run.json, so it is not a brainvq run that can be resumed; "
                           f"start a run with `brainvq run --run-dir {run_dir}`")
    refuse_if_in_use(run_dir)
    old = record["parameters"]
    new = dict(profile=profile or old["profile"], dataset=dataset or old["dataset"],
               data_dir=_absolute(data_dir) or old.get("data_dir"), run_dir=str(run_dir.resolve()),
               overrides={**old.get("overrides", {}), **(overrides or {})})
    before = load_params(old["profile"], _param_overrides(old["dataset"], old.get("data_dir"), old.get("overrides")))
    after = load_params(new["profile"], _param_overrides(new["dataset"], new["data_dir"], new["overrides"]))
    changed = [k for k in after if k != "profile" and k not in RESUME_FREE and before.get(k) != after[k]]
    names = [n for n in record.get("notebooks") or _notebooks() if n in NOTEBOOKS]
    finished = {n: v for n, v in (record.get("finished") or {}).items()
                if n in names and (run_dir / f"{n}.ipynb").exists()}
    rerun = []
    if changed:
        first = min((first_reader(k) for k in changed), key=NOTEBOOKS.index)
        what = ", ".join(f"{k}={before.get(k)!r} -> {after[k]!r}" for k in changed[:4])
        what += f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        if not overwrite:
            raise BrainVQError(f"{run_dir} was run with other parameters ({what}); leave them out to resume the "
                               f"run as it was, or add --overwrite to run {first} and every notebook after it again "
                               f"with the new ones")
        rerun = [n for n in names if NOTEBOOKS.index(n) >= NOTEBOOKS.index(first)]
        finished = {n: v for n, v in finished.items() if n not in rerun}
    with run_lock(run_dir):
        if rerun:
            removed = discard_outputs(run_dir, rerun)
            print(f"parameters changed ({what}): {', '.join(rerun)} run again; removed {len(removed)} of their "
                  f"outputs ({', '.join(removed[:6])}{' ...' if len(removed) > 6 else ''})")
        write_json(run_dir / "run.json", {**record, "parameters": new, "notebooks": names, "finished": finished,
                                          "resumed": [*record.get("resumed", []),
                                                      time.strftime("%Y-%m-%d %H:%M:%S")]})
        return _run_locked(run_dir, names, verbose, status_every_s)


def _run_locked(run_dir, names, verbose, status_every_s) -> Path:
    """Run the notebooks ``names`` that ``run.json`` does not list as finished, with the parameters it
    records, once this process holds ``run_dir``."""
    import papermill

    from .progress import FILE_ENV, HEADLESS_ENV
    from .quiet import LOG_ENV, STARTUP_LINES, VERBOSE_ENV

    record = read_json(run_dir / "run.json")
    parameters, finished = record["parameters"], dict(record.get("finished") or {})
    log_path, status_path = run_dir / LOG_FILE, run_dir / PROGRESS_FILE
    saved_env = {k: os.environ.get(k) for k in (FILE_ENV, HEADLESS_ENV, LOG_ENV, VERBOSE_ENV)}
    os.environ[FILE_ENV], os.environ[HEADLESS_ENV] = str(status_path.resolve()), "1"   # the kernels inherit them
    os.environ[LOG_ENV] = str(log_path.resolve())        # the kernels' native chatter, kept out of the notebooks
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    try:
        with contextlib.ExitStack() as stack:
            log_file = None if verbose else stack.enter_context(open(log_path, "a", buffering=1))
            # this process's own start-up lines (quiet.quiet_native_startup)
            (sys.stderr if verbose else log_file).write("".join(f"{line}\n" for line in STARTUP_LINES))
            stream = stack.enter_context(_quiet_terminal(log_file, verbose))
            term = _Terminal(stream, log_file, every_s=status_every_s)
            term.line(f"run directory: {run_dir}" + ("" if verbose else f" (everything the notebooks print: "
                                                                          f"{log_path.name})"))
            # papermill's log of every cell output: to the run's log (or, verbose, the terminal)
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            pm_logger = logging.getLogger("papermill")
            pm_logger.addHandler(handler)
            pm_level = pm_logger.level
            pm_logger.setLevel(logging.INFO)
            stack.callback(pm_logger.removeHandler, handler)
            stack.callback(pm_logger.setLevel, pm_level)
            timing = {n: finished[n]["seconds"] for n in names if n in finished}
            total, before = time.perf_counter(), sum(timing.values())
            for i, name in enumerate(names, 1):
                start_t, prefix = time.perf_counter(), f"[{i}/{len(names)}] {name}"
                if name in finished:
                    term.line(f"{prefix} finished before ({finished[name]['seconds']:.1f} s, "
                              f"{finished[name]['ended']}): not run again")
                    continue
                status_path.unlink(missing_ok=True)
                term.status(f"{prefix}: starting")
                watcher = _Watcher(status_path, lambda t, p=prefix: term.status(f"{p}: {t}"))
                out = run_dir / f"{name}.ipynb"
                try:
                    papermill.execute_notebook(str(paths.notebooks_dir() / f"{name}.ipynb"), str(out),
                                               parameters=parameters, cwd=str(paths.notebooks_dir()),
                                               progress_bar=False, log_output=True, kernel_name="python3")
                except papermill.PapermillExecutionError as err:
                    watcher.stop()
                    term.finish()
                    reason = (str(err.evalue).splitlines() or [""])[0]
                    if err.ename != "BrainVQError":   # brainvq's own messages are one line, whole
                        reason = reason if len(reason) <= 300 else reason[:300] + " ..."
                    raise BrainVQError(f"[{i}/{len(names)}] {name} failed: {err.ename}: {reason} "
                                       f"(the executed notebook with the full error: {out}; once it is mended, "
                                       f"`brainvq run --resume {run_dir}` goes on from here)") from None
                except BaseException as err:   # the kernel died, could not start, timed out, or ^C
                    watcher.stop()
                    term.finish()
                    if isinstance(err, KeyboardInterrupt):
                        # papermill's pending tasks then see the kernel it shut down die and asyncio would print
                        # their DeadKernelError at exit: expected after ^C or SIGTERM, and nothing to act on
                        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
                        raise KeyboardInterrupt(f"continue with `brainvq run --resume {run_dir}`") from None
                    if isinstance(err, BrainVQError):
                        raise
                    traceback.print_exc()                 # to the run's log (verbose: the terminal)
                    raise BrainVQError(f"[{i}/{len(names)}] {name} stopped: {type(err).__name__}: "
                                       f"{(str(err).splitlines() or [''])[0][:300]} "
                                       f"(the traceback: {log_path if not verbose else 'above'}; "
                                       f"`brainvq run --resume {run_dir}` goes on from here)") from None
                watcher.stop()
                timing[name] = round(time.perf_counter() - start_t, 1)
                update_metrics(run_dir, "timing", {**{n: timing[n] for n in names if n in timing},
                                                   "total": round(before + time.perf_counter() - total, 1)})
                finished[name] = {"seconds": timing[name], "ended": time.strftime("%Y-%m-%d %H:%M:%S")}
                write_json(run_dir / "run.json", {**read_json(run_dir / "run.json"), "finished": finished})
                term.line(f"{prefix} done in {timing[name]:.1f} s")
            term.line(f"all {len(names)} notebooks done in {before + time.perf_counter() - total:.1f} s"
                      + (f" ({before:.1f} s of them before this resume)" if before else "")
                      + f"; metrics: {run_dir / 'metrics.json'}")
    finally:
        status_path.unlink(missing_ok=True)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return run_dir
