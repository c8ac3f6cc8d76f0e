"""How the notebooks are wired: their shared setup, their data, their headless run.

Every notebook starts with ``ctx = pipeline.start(profile, dataset, data_dir, run_dir,
overrides)``: it resolves the parameters, the run directory and the figure folder,
and prints where things are. ``run_notebooks`` executes the notebooks in order with
papermill, one progress line each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, fields
from pathlib import Path

from . import devices, paths, plotting
from .config import DataConfig, PriorConfig, SamplingConfig, VQVAEConfig, load_params, stage_config
from .errors import BrainVQError
from .runs import (atomic_path, default_run_dir, discard_outputs, new_run_dir, read_json, refuse_if_in_use, require,
                   run_lock, run_path, update_metrics, write_json)

NOTEBOOKS = ("01_data_exploration", "02_vqvae_training", "03_codebook_inspection",
             "04_pixelcnn_training", "05_generation_and_evaluation")


def print_versions() -> dict:
    """Print (and return) the versions that matter, as MONAI's print_config does."""
    import keras
    import numpy
    import tensorflow

    from . import __version__
    info = {"brainvq_utils": __version__, "python": platform.python_version(),
            "keras": keras.__version__, "backend": keras.backend.backend(),
            "tensorflow": tensorflow.__version__, "numpy": numpy.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
    for key, value in info.items():
        print(f"{key:>14}: {value}")
    return info


@dataclass
class NotebookContext:
    params: dict
    run_dir: Path
    retrain: bool = False

    @property
    def profile(self) -> str:
        return self.params["profile"]

    @property
    def data(self) -> DataConfig:
        return stage_config(DataConfig, self.params)

    def stage(self, cls):
        return stage_config(cls, self.params)


def _text(name: str, value, notes: list) -> str | None:
    """A parameter that must be text (a name or a path), or None. papermill types a ``-p`` value by its
    look, so ``-p run_dir 2024`` arrives as the number 2024: it is read as the text it was, and said
    (a leading zero, as in 007, is lost on the way: pass such a value with ``-r``)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        notes.append(f"{name}={value!r} arrived as a number (papermill types -p values by their look) and is "
                     f"read as the text {str(value)!r}; pass text with -r {name} VALUE to keep it exactly")
        return str(value)
    raise BrainVQError(f"parameter {name}={value!r} must be text (a name or a folder), not {type(value).__name__}")


def _flag(name: str, value) -> bool:
    """A yes/no parameter: a bool, 0/1, or the words true/false/yes/no (``-p retrain no`` is a string)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise BrainVQError(f"parameter {name}={value!r} must be true or false")


def _assigned(source: str) -> list[str]:
    """The names a cell assigns at its top level (its parameters)."""
    import ast
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]


def injected_parameters(history=None, namespace=None) -> dict:
    """The parameters papermill injected (``-p NAME VALUE``) that the notebook's own parameters cell does
    not declare, with their values: papermill only warns about those ("Passed unknown parameter") and
    the notebook would run without them. Read from the kernel's input history, where papermill's cell
    (first line exactly ``# Parameters``) follows the notebook's parameters cell; ``{}`` outside a
    kernel or when nothing was injected."""
    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return {}
        shell = get_ipython()
        if shell is None:
            return {}
        history, namespace = shell.user_ns.get("In") or [], shell.user_ns
    for i in range(len(history) - 1, 0, -1):
        if history[i].split("\n", 1)[0].strip() == "# Parameters":
            declared = set(_assigned(history[i - 1]))
            return {name: namespace.get(name) for name in _assigned(history[i]) if name not in declared}
    return {}


def start(profile: str = "demo", dataset: str = "synthetic", data_dir=None, run_dir=None,
          overrides: dict | None = None, interactive_logging: bool | None = None,
          retrain=False) -> NotebookContext:
    """Resolve parameters and run directory for a notebook, and set the figure folder.

    Every value of the parameters cell is checked and, where papermill typed it by its look, turned
    back into the type it needs (``-p run_dir 2024`` is text; ``-p retrain no`` is False); a
    parameter papermill passed that the parameters cell does not declare is applied as an override
    when brainvq knows it (``-p image_size 48``) and stops the notebook, named, when it does not.
    A relative ``data_dir`` is made absolute here, so that a notebook run later from another working
    directory reads the same folder (01 records it in ``dataset.json``). A run directory that a
    previous notebook of the same run wrote keeps its dataset parameters (``dataset.json``), so 02-05
    train on what 01 explored.
    """
    import keras

    from .config import known_keys

    notes: list[str] = []
    profile, dataset = _text("profile", profile, notes), _text("dataset", dataset, notes)
    data_dir, run_dir = _text("data_dir", data_dir, notes), _text("run_dir", run_dir, notes)
    if isinstance(overrides, str):   # `papermill -p overrides '{"epochs": 5}'` passes a string
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError:
            raise BrainVQError(f"overrides {overrides!r} is not a JSON object like '{{\"epochs\": 5}}'") from None
    if not isinstance(overrides or {}, dict):
        raise BrainVQError(f"overrides must be a dict of parameter names to values; got {overrides!r}")
    overrides = dict(overrides or {})
    for name, value in injected_parameters().items():
        if name not in known_keys():
            raise BrainVQError(f"papermill passed -p {name} {value!r}, which is neither in this notebook's parameters "
                               f"cell nor a brainvq parameter; check its spelling (known: {', '.join(sorted(known_keys()))})")
        notes.append(f"{name}={value!r} is not in this notebook's parameters cell: applied as an override")
        overrides[name] = value
    overrides.setdefault("dataset", dataset)
    if data_dir not in (None, ""):
        overrides.setdefault("data_dir", data_dir)
    if overrides.get("data_dir") not in (None, ""):
        overrides["data_dir"] = _absolute(_text("data_dir", overrides["data_dir"], notes))
    params = load_params(profile, overrides)
    devices.initialize_multi_host()   # several machines (KERAS_DISTRIBUTION_*): join them first
    run_dir = Path(run_dir).expanduser() if run_dir else default_run_dir(profile)
    run_dir.mkdir(parents=True, exist_ok=True)
    plotting.set_figure_dir(run_dir)
    # Headless runs keep Keras' output to a line per epoch (progress.keras_verbose), not bars.
    if interactive_logging is not None:
        (keras.config.enable_interactive_logging if interactive_logging
         else keras.config.disable_interactive_logging)()
    for note in notes:
        print(f"note: {note}")
    print(f"profile {profile}; run directory {run_dir}")
    return NotebookContext(params, run_dir, _flag("retrain", retrain))


def data_root(cfg: DataConfig) -> Path:
    """The folder a data config reads: its ``data_dir`` or the profile's synthetic cohort."""
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    if cfg.dataset != "synthetic":
        raise BrainVQError(f"dataset {cfg.dataset!r} needs a data_dir (see data/README.md for the layouts)")
    return paths.data_dir() / f"synthetic-{cfg.subjects}x{cfg.synth_size}-seed{cfg.seed}"


def open_dataset(cfg: DataConfig, build_synthetic: bool = True):
    """Load the configured data set; build the synthetic cohort first if it is missing."""
    from .data import load_dataset

    root = data_root(cfg)
    if cfg.dataset == "synthetic" and not (root / "cohort.json").exists():
        if not build_synthetic:
            raise BrainVQError(f"no synthetic cohort in {root}: run `brainvq synth {root}` first")
        from .synthetic import build_cohort
        print(f"building the synthetic cohort in {root} (once; later runs reuse it)")
        build_cohort(root, subjects=cfg.subjects, seed=cfg.seed, size=cfg.synth_size)
    return load_dataset(cfg.dataset, root, validate_fraction=cfg.validate_fraction, seed=cfg.seed,
                        skip_bad=cfg.skip_bad)


def check_held_out_subjects(ds, folds: int) -> None:
    """Notebook 05's realism test folds the validation and test slices by subject, so each of the two
    splits needs ``folds`` subjects or more: a one-line error now (01), not after 02's and 04's training."""
    for name in ("validate", "test"):
        subjects = sorted(set(getattr(ds, name).subjects))
        if len(subjects) < folds:
            lower = f", or lower it with -p realism_folds={len(subjects)}" if len(subjects) >= 2 else ""
            raise BrainVQError(f"the {name} split of {ds.root} holds {len(subjects)} subject(s) "
                               f"({', '.join(subjects[:3])}{' ...' if len(subjects) > 3 else ''}), but notebook 05's "
                               f"realism test needs at least realism_folds={folds}: add subjects to it{lower}")


def record_dataset(ctx: NotebookContext, ds, summary: dict) -> dict:
    """Write ``dataset.json`` (config, summary and ``BrainDataset.describe``'s lines; read by 02-05) and the
    ``dataset`` metrics, once the held-out splits are checked (``check_held_out_subjects``)."""
    check_held_out_subjects(ds, ctx.params["realism_folds"])
    write_json(ctx.run_dir / "dataset.json", {"config": ctx.data.__dict__, "summary": summary,
                                              "found": ds.describe().splitlines()})
    section = {"name": ds.name, "layout": ds.layout, "root": ds.root, "data_dir": summary["data_dir"],
               **{f"{k}_images": int(v) for k, v in summary["images"].items()},
               "subjects": summary["subjects"], "image_size": summary["image_size"],
               "skipped_files": int(summary["skipped"]), "duplicate_groups": int(summary["duplicate_groups"]),
               **({"classes": summary["labels"]} if "labels" in summary else {})}
    update_metrics(ctx.run_dir, "dataset", section)
    return section


def dataset_config_from_run(ctx: NotebookContext) -> DataConfig:
    """The data config 01 recorded in the run directory (which must exist)."""
    record = read_json(require(ctx.run_dir, "dataset.json"))
    return DataConfig(**record["config"])


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


def _absolute(data_dir) -> str | None:
    """``data_dir`` as an absolute path (the notebooks run in notebooks/, not where the command was given)."""
    return None if data_dir in (None, "") else str(Path(data_dir).expanduser().resolve())


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

    from .progress import FILE_ENV, HEADLESS_ENV, STARTUP_LINES

    record = read_json(run_dir / "run.json")
    parameters, finished = record["parameters"], dict(record.get("finished") or {})
    log_path, status_path = run_dir / LOG_FILE, run_dir / PROGRESS_FILE
    saved_env = {k: os.environ.get(k) for k in (FILE_ENV, HEADLESS_ENV)}
    os.environ[FILE_ENV], os.environ[HEADLESS_ENV] = str(status_path.resolve()), "1"   # the kernels inherit them
    try:
        with contextlib.ExitStack() as stack:
            log_file = None if verbose else stack.enter_context(open(log_path, "a", buffering=1))
            # this process's own start-up lines (progress.quiet_native_startup)
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
                    reason = reason if len(reason) <= 300 else reason[:300] + " ..."
                    raise BrainVQError(f"[{i}/{len(names)}] {name} failed: {err.ename}: {reason} "
                                       f"(the executed notebook with the full error: {out}; once it is mended, "
                                       f"`brainvq run --resume {run_dir}` goes on from here)") from None
                except BaseException as err:   # the kernel died, could not start, timed out, or ^C
                    watcher.stop()
                    term.finish()
                    if isinstance(err, KeyboardInterrupt):
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


# ----------------------------------------------------------------------------- priors (04, 05)
def load_vqvae(ctx: NotebookContext):
    import keras
    return keras.saving.load_model(require(ctx.run_dir, "vqvae.keras"))


def encode_dataset(ctx: NotebookContext, vqvae, ds, image_size) -> dict:
    """Code maps of every split with their conditioning, saved as ``codes.npz``.

    Slice positions are used where the layout knows them (OASIS, synthetic); labels where
    the data set has at least two classes (ADNI, the synthetic AD/NC cohort).
    """
    import numpy as np

    from .codebook import encode_split
    splits = ds.splits()
    all_slices = [z for s in splits.values() for z in s.slices]
    unknown = sum(z < 0 for z in all_slices)
    if 0 < unknown < len(all_slices):   # the data layer reads every level or none (data._folder_names)
        raise BrainVQError(f"{unknown} of {len(all_slices)} slices of {ds.root} have no slice level; conditioning "
                           f"on the level needs all of them: rename those files, or set condition_on_position=false")
    label_names = sorted({y for s in splits.values() for y in s.labels if y is not None})
    out = {"num_positions": (max(all_slices) + 1) if all_slices and min(all_slices) >= 0 else 0,
           "label_names": label_names if len(label_names) >= 2 else []}
    for name, split in splits.items():
        out[f"{name}_codes"] = encode_split(vqvae, split, image_size)
        out[f"{name}_position"] = np.asarray(split.slices, np.int32)
        out[f"{name}_label"] = np.asarray([out["label_names"].index(y) if y in out["label_names"] else -1
                                           for y in split.labels], np.int32)
    with atomic_path(ctx.run_dir / "codes.npz") as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in out.items()})
    return out


def load_codes(ctx: NotebookContext) -> dict:
    import numpy as np
    with np.load(require(ctx.run_dir, "codes.npz"), allow_pickle=False) as f:
        out = {k: f[k] for k in f.files}
    out["num_positions"] = int(out["num_positions"])
    out["label_names"] = [str(x) for x in out["label_names"]]
    return out


def conditioning(codes: dict, cfg) -> tuple[int, int]:
    """(num_positions, num_classes) the prior is built with, from what the data set knows."""
    positions = codes["num_positions"] if cfg.condition_on_position else 0
    classes = len(codes["label_names"]) if cfg.condition_on_label else 0
    return positions, classes


def split_inputs(codes: dict, split: str, positions: int, classes: int) -> dict:
    from .training import prior_inputs
    return prior_inputs(codes[f"{split}_codes"], codes[f"{split}_position"] if positions else None,
                        codes[f"{split}_label"] if classes else None)


def load_prior(ctx: NotebookContext, vqvae):
    """``prior.keras`` of the run, checked against the VQ-VAE it must decode through."""
    import keras

    from .priors import prior_info
    prior = keras.saving.load_model(require(ctx.run_dir, "prior.keras"))
    info = prior_info(prior)
    if info["num_codes"] != vqvae.num_codes or tuple(info["grid"]) != tuple(vqvae.latent_grid):
        raise BrainVQError(
            f"prior.keras was trained on {info['num_codes']} codes on a {info['grid']} grid but vqvae.keras "
            f"has {vqvae.num_codes} codes on a {tuple(vqvae.latent_grid)} grid: rerun 04_pixelcnn_training")
    return prior, info


def decode_codes(vqvae, code_maps, batch_size: int = 64):
    """Images (N, H, W, 1) in [0, 1] from code maps (N, h, w), in batches."""
    import keras
    import numpy as np
    parts = [keras.ops.convert_to_numpy(vqvae.decode(code_maps[i:i + batch_size]))
             for i in range(0, len(code_maps), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, *vqvae.encoder.input_shape[1:]), np.float32)


# ----------------------------------------------------------------------------- evaluation (05)
def evaluation_sets(ds, codes: dict, vqvae, info: dict, image_size, n: int, seed: int = 0) -> dict:
    """The held-out sets that samples are judged against (notebook 05).

    ``real``: up to ``n`` test slices; ``real_other``: up to ``n`` validation slices (other
    subjects); ``reconstructions`` and ``real_reconstructions``: the VQ-VAE's decoding of
    ``real_other``'s and ``real``'s code maps. Each is ``(images, subject names)``.
    ``conditions`` asks the prior for one sample per ``real_other`` slice, at its slice position
    and class (what the prior knows), so that the samples' positions match those of the
    reconstructions they are compared with; ``positions`` holds the slice positions of ``real``
    and ``real_other``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)

    def pick(split):
        return np.sort(rng.choice(len(split), min(int(n), len(split)), replace=False))

    test_idx, val_idx = pick(ds.test), pick(ds.validate)
    real, other = ds.test.subset(test_idx), ds.validate.subset(val_idx)
    conditions = {}
    if info["num_positions"]:
        conditions["position"] = codes["validate_position"][val_idx]
    if info["num_classes"]:
        conditions["label"] = codes["validate_label"][val_idx]
    return {"real": (real.load(image_size), np.asarray(real.subjects)),
            "real_other": (other.load(image_size), np.asarray(other.subjects)),
            "reconstructions": (decode_codes(vqvae, codes["validate_codes"][val_idx]), np.asarray(other.subjects)),
            "real_reconstructions": (decode_codes(vqvae, codes["test_codes"][test_idx]), np.asarray(real.subjects)),
            "conditions": conditions,
            "positions": {"real": np.asarray(real.slices), "real_other": np.asarray(other.slices)}}


def sampling_kwargs(cfg) -> dict:
    """The keyword arguments of ``sampling.sample`` that a SamplingConfig sets."""
    return dict(temperature=cfg.temperature, top_k=cfg.top_k or None, method=cfg.sampler, steps=cfg.decode_steps,
                choice_temperature=cfg.choice_temperature)
