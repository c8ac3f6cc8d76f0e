"""How the notebooks are wired: their shared setup, their data, the run's models and code maps.

Every notebook starts with ``ctx = pipeline.start(profile, dataset, data_dir, run_dir,
overrides)``: it resolves and checks the parameters, the run directory and the figure folder,
and prints where things are. The rest opens the data set (01 records what it found), loads what
an earlier notebook of the run wrote (the VQ-VAE, the code maps, the prior) and builds the sets
that notebook 05 judges samples against. ``runner`` executes the notebooks headless.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from . import devices, paths, plotting
from .config import DataConfig, load_params, stage_config
from .errors import BrainVQError
from .runs import atomic_path, default_run_dir, read_json, require, update_metrics, write_json


def compute_line() -> str:
    """What this kernel computes on, in one plain line: the GPU and whether it has bfloat16, or the CPU."""
    import keras

    accelerators = [d for d in keras.distribution.list_devices() if not str(d).lower().startswith("cpu")]
    if not accelerators:
        return (f"CPU, {os.cpu_count()} cores, no GPU found: training runs on the CPU (the demo profile's time "
                f"budgets are set for a 2-core laptop CPU)")
    name = str(accelerators[0])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", name)
    bf16 = devices.gpu_has_bfloat16()
    more = f" (and {len(accelerators) - 1} more)" if len(accelerators) > 1 else ""
    return f"GPU: {name}{more}, bfloat16: {'yes' if bf16 else 'no'}"


def print_versions() -> dict:
    """Print (and return) the versions that matter, as MONAI's print_config does, and what this kernel
    computes on (``compute_line``)."""
    import keras
    import numpy
    import tensorflow

    from . import __version__
    info = {"brainvq_utils": __version__, "python": platform.python_version(),
            "keras": keras.__version__, "backend": keras.backend.backend(),
            "tensorflow": tensorflow.__version__, "numpy": numpy.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "computes on": compute_line()}
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

    from .config import did_you_mean, known_keys

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
                               f"cell nor a brainvq parameter{did_you_mean(name)}; check its spelling (known: "
                               f"{', '.join(sorted(known_keys()))})")
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
    return load_dataset(cfg.dataset, root, validate_fraction=cfg.validate_fraction, test_fraction=cfg.test_fraction,
                        seed=cfg.seed, skip_bad=cfg.skip_bad)


def check_held_out_subjects(ds, folds: int) -> None:
    """Notebook 05's realism test folds the validation and test slices by subject, so each of the two
    splits needs ``folds`` subjects or more: a one-line error now (01), not after 02's and 04's training,
    saying which fraction to raise where the split is carved here (adni's validation, folder, nifti)."""
    total = len(set(ds.train.subjects) | set(ds.validate.subjects) | set(ds.test.subjects))
    for name in ("validate", "test"):
        subjects = sorted(set(getattr(ds, name).subjects))
        if len(subjects) < folds:
            carved = ds.layout in ("folder", "nifti") or (ds.layout == "adni" and name == "validate")
            need = min(0.45, -(-folds * 100 // max(total, 1)) / 100 + 0.01)
            raise_it = f", or give it {folds} by -p {name}_fraction={need:.2f}" if carved and need * total >= folds else ""
            lower = f", or lower -p realism_folds={len(subjects)}" if len(subjects) >= 2 else ""
            raise BrainVQError(f"the {name} split of {ds.root} holds {len(subjects)} subject(s) "
                               f"({', '.join(subjects[:3])}{' ...' if len(subjects) > 3 else ''}) of {total}, but notebook "
                               f"05's realism test needs at least realism_folds={folds}: add subjects{raise_it}{lower}")


DARK = 0.25   # the brightest pixel of a sample of real MRI slices lies near 1 after scaling to [0, 1]


def check_brightness(ds, summary: dict) -> None:
    """Stop with one line when the sampled training slices are nearly black: their brightest pixel below
    ``DARK`` of the full scale (16-bit PNGs that hold 12-bit values look so, once divided by 65535)."""
    stats = summary["intensity"].get("train", {})
    brightest = stats.get("max")
    if brightest is not None and stats.get("sampled_images") and brightest < DARK:
        raise BrainVQError(f"the training slices of {ds.root} are nearly black: the brightest pixel of "
                           f"{stats['sampled_images']} sampled slices is {brightest:.3f} of the full scale (16-bit PNGs "
                           f"holding 12-bit values?); rescale the images to use the full range of their bit depth")


def record_dataset(ctx: NotebookContext, ds, summary: dict) -> dict:
    """Write ``dataset.json`` (config, summary and ``BrainDataset.describe``'s lines; read by 02-05) and the
    ``dataset`` metrics, once the held-out splits are checked (``check_held_out_subjects``)."""
    check_held_out_subjects(ds, ctx.params["realism_folds"])
    check_brightness(ds, summary)
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


def _absolute(data_dir) -> str | None:
    """``data_dir`` as an absolute path (the notebooks run in notebooks/, not where the command was given)."""
    return None if data_dir in (None, "") else str(Path(data_dir).expanduser().resolve())



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
    if 0 < unknown < len(all_slices):   # the data layer reads every level or none (data.layouts._folder_names)
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
    """(num_positions, num_classes) the prior is built with, from what the data set knows and what the
    architecture takes (the plain PixelCNN takes no conditioning)."""
    from .priors import get
    if not get(cfg.prior_arch).takes_conditioning:
        return 0, 0
    positions = codes["num_positions"] if cfg.condition_on_position else 0
    classes = len(codes["label_names"]) if cfg.condition_on_label else 0
    return positions, classes


def brain_codes(vqvae, code_maps, limit: int = 512):
    """(K,) bool: the codes that decode to brain (a grey level above ``metrics.BRAIN_LEVEL`` where they
    are used, ``codebook.code_levels``, in up to ``limit`` of the given maps): what the two-level prior's
    coarse layout is read from."""
    from .codebook import code_levels
    from .metrics import BRAIN_LEVEL
    return code_levels(vqvae, code_maps[:limit]) > BRAIN_LEVEL


def split_inputs(codes: dict, split: str, positions: int, classes: int) -> dict:
    from .priors import prior_inputs
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
