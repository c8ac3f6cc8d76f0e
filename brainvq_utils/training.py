"""Fitting the two models with checkpoints, resume and monitors, and scoring what they learned.

``fit_resumable`` fits any compiled model with a per-epoch cosine learning-rate schedule, writes
a checkpoint after every epoch, stops at a time budget and, killed half way, continues from the
last finished epoch on the next call (its callbacks live in ``monitors``; validation SSIM here, as it
scores reconstructions). ``train_vqvae`` fits the VQ-VAE with its monitors (validation SSIM, codebook usage
and perplexity every epoch) and ``reconstruction_scores`` /
``vqvae_metrics`` score it; ``train_prior`` fits a prior on code maps (its data: ``priors.data``;
its precision: ``devices.resolve_precision``) and ``prior_scores`` scores it in bits per code.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import keras
import numpy as np

from . import devices as devices_lib
from . import metrics, progress, tensorboard_logs
from .config import VQVAEConfig, save_config
from .errors import BrainVQError
from .losses import MSEPlusSSIM
from .runs import atomic_path, read_json, write_json
from .priors.data import masked_code_dataset
from .tensorboard_logs import reconstruction_images, sample_images
from .vqvae import build_vqvae

from . import monitors
from .monitors import (CHECKPOINT_DIR, BitsPerCode, CodebookMonitor, CosineByProgress, EpochImages, ProgressReport,
                       TrainClock, _numpy)

epoch_images = monitors.epoch_images   # the notebooks read the kept images as training.epoch_images


class ValidationSSIM(keras.callbacks.Callback):
    """Mean SSIM and MSE of reconstructions over the whole validation split."""

    def __init__(self, val_ds):
        super().__init__()
        self.val_ds = val_ds

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        scores = reconstruction_scores(self.model, self.val_ds, codes=False)
        logs["val_ssim"] = float(scores["ssim"].mean())
        logs["val_mse"] = float(scores["mse"].mean())
        logs["val_seconds"] = time.perf_counter() - start


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: the model (with optimizer) and the history so far."""

    def __init__(self, folder, name, history):
        super().__init__()
        self.folder, self.name, self.history = Path(folder), name, history

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        with atomic_path(self.folder / f"{self.name}_last.keras") as tmp:
            self.model.save(tmp)
        write_json(self.folder / f"{self.name}_state.json",
                   {"epoch": epoch, "history": self.history, "finished": False})


def fit_resumable(name, build, train_ds, run_dir, *, epochs, learning_rate, time_budget_s=0.0,
                  steps_per_epoch=0, seed=0, monitors=lambda model: [], validation_data=None,
                  retrain=False, tensorboard=False, tensorboard_images=None, verbose=None,
                  export=lambda model: model, label=None, devices="auto", batch_size=None, epoch_images=None):
    """Fit ``build()`` (a compiled model), or continue an interrupted fit, or load a finished one.

    Saves ``export(model)`` as ``run_dir/<name>.keras`` at the end and, after every epoch, a
    checkpoint (the model as trained, with its optimizer) and the history in
    ``run_dir/checkpoints/``; a killed run continues from its last finished epoch, on any number
    of devices. ``monitors(model)`` gives callbacks that add keys to the epoch logs.
    ``tensorboard``: write the epoch logs, and the pictures ``tensorboard_images(model)`` makes,
    to ``run_dir/logs/<name>/`` (``tensorboard_logs``). ``epoch_images``: a ``make_images`` whose
    pictures are kept every epoch for the notebooks (``EpochImages``). ``verbose``: Keras' (None: a live bar
    when someone watches, a line per epoch headless; ``progress.keras_verbose``). ``label``: the
    model's name in progress lines. ``devices``: ``auto``, 1 or N (``devices.scope``): the
    batches of ``train_ds`` are global batches of ``batch_size``, split evenly across the devices
    (checked when given; under JAX a last smaller batch that does not split is left out).
    Returns ``(export(model), history)``; the model is a one-device model whatever ``devices``.
    """
    run_dir = Path(run_dir)
    final = run_dir / f"{name}.keras"
    ckpt_dir = run_dir / CHECKPOINT_DIR
    state_file, last = ckpt_dir / f"{name}_state.json", ckpt_dir / f"{name}_last.keras"
    state = {} if retrain else read_json(state_file)
    if final.exists() and not retrain:
        print(f"{final} exists: loading it instead of training (pass retrain=True to train again)")
        return keras.saving.load_model(final), state.get("history", {})
    with devices_lib.scope(devices) as chosen:
        if batch_size:
            devices_lib.global_batch_check(batch_size, len(chosen))
        if len(chosen) > 1:
            print(f"training {label or name} on {len(chosen)} devices: {', '.join(chosen)}")
        if state and last.exists():
            model = keras.saving.load_model(last)
            history, initial_epoch = state["history"], state["epoch"] + 1
            print(f"resuming from the checkpoint of epoch {initial_epoch} in {ckpt_dir}")
        else:
            keras.utils.set_random_seed(seed)   # the initial weights too come from the seed
            model, history, initial_epoch = build(), {}, 0
        spent = history.get("train_seconds", [0.0])[-1]
        clock = TrainClock(spent, time_budget_s)
        callbacks = [clock, CosineByProgress(learning_rate, epochs, time_budget_s, clock), *monitors(model),
                     EpochCheckpoint(ckpt_dir, name, history), ProgressReport(label or name, epochs, clock)]
        if epoch_images is not None:
            callbacks.append(EpochImages(ckpt_dir, name, epoch_images))
        if tensorboard:   # after the monitors, so that it sees every key they add
            callbacks += tensorboard_logs.callbacks(run_dir / "logs" / name, tensorboard_images)
        done_by_time = time_budget_s and spent >= time_budget_s
        if initial_epoch < epochs and not done_by_time:
            keras.utils.set_random_seed(seed + initial_epoch)
            steps = steps_per_epoch or None
            filtered = len(chosen) > 1 and keras.backend.backend() == "jax"
            if filtered:
                train_ds, validation_data = (_whole_batches(d, len(chosen)) for d in (train_ds, validation_data))
            with warnings.catch_warnings():
                if filtered:
                    # A filtered dataset has no known length; Keras learns it in the first epoch and
                    # warns that the input "ran out of data" at its end, which is expected here.
                    warnings.filterwarnings("ignore", message="Your input ran out of data")
                model.fit(train_ds.repeat() if steps else train_ds, epochs=epochs, steps_per_epoch=steps,
                          initial_epoch=initial_epoch, callbacks=callbacks, validation_data=validation_data,
                          shuffle=False, verbose=progress.keras_verbose() if verbose is None else verbose)
            # (tf.data pipelines shuffle themselves)
        model = export(model)
        with atomic_path(final) as tmp:
            model.save(tmp)
    write_json(state_file, {"epoch": len(history.get("loss", [])) - 1, "history": history, "finished": True})
    if len(chosen) > 1:   # the one-device model the notebooks go on with
        model = keras.saving.load_model(final)
    return model, history


def _whole_batches(ds, n_devices):
    """A dataset of batches without the (last) batch whose size does not split evenly across
    ``n_devices`` (JAX's DataParallel cannot place it); None stays None."""
    if ds is None:
        return None
    import tensorflow as tf

    def even(*batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0] % n_devices == 0

    return ds.filter(even)


def vqvae_for(cfg: VQVAEConfig, image_size):
    """The (untrained) VQ-VAE that ``cfg`` describes, for images of ``image_size``: what
    ``train_vqvae`` builds, and what notebook 02 prints the summaries of."""
    return build_vqvae(image_size, cfg.num_codes, cfg.code_dim, cfg.channels, cfg.res_blocks, cfg.downsample,
                       cfg.beta, cfg.update, cfg.decay, cfg.restart_below, cfg.architecture, cfg.seed)


def compile_vqvae(model, cfg: VQVAEConfig):
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=MSEPlusSSIM(cfg.ssim_weight))
    return model


def train_vqvae(train_ds, val_ds, cfg: VQVAEConfig, image_size, run_dir, *, retrain=False,
                tensorboard=False, verbose=None, devices="auto", batch_size=None):
    """Fit a VQ-VAE (see ``fit_resumable``). ``train_ds`` yields (x, x), ``val_ds`` x batches.
    Every epoch the same 8 validation slices (every 4th of the first 32: one subject's levels, where
    the split is ordered by subject) are kept above their reconstructions (``epoch_images(run_dir,
    "vqvae")``; with ``tensorboard``, logged too).

    ``devices``: ``auto``, 1 or N, ``batch_size``: the global batch of ``train_ds`` (``fit_resumable``).

    Returns ``(model, history)``; the model is also saved as ``run_dir/vqvae.keras``.
    """
    def build():
        return compile_vqvae(vqvae_for(cfg, image_size), cfg)

    save_config(cfg, Path(run_dir) / "vqvae_config.json")
    fixed = reconstruction_images(_first(val_ds, 32)[::4])   # one subject's levels, where split by subject
    return fit_resumable("vqvae", build, train_ds, run_dir, epochs=cfg.epochs, learning_rate=cfg.learning_rate,
                         time_budget_s=cfg.time_budget_s, steps_per_epoch=cfg.steps_per_epoch, seed=cfg.seed,
                         monitors=lambda m: [CodebookMonitor(m.quantizer), ValidationSSIM(val_ds)],
                         retrain=retrain, tensorboard=tensorboard, verbose=verbose, label="VQ-VAE", devices=devices,
                         batch_size=batch_size,
                         tensorboard_images=fixed if tensorboard else None, epoch_images=fixed)


def _first(ds, n):
    """The first ``n`` elements of a dataset of batches (of x, or of (x, ...) tuples)."""
    parts, count = [], 0
    for batch in ds:
        batch = batch[0] if isinstance(batch, (tuple, list)) else batch
        parts.append(np.asarray(batch))
        count += len(parts[-1])
        if count >= n:
            break
    return np.concatenate(parts)[:n]


def reconstruction_scores(model, dataset, codes=True) -> dict:
    """Per-image SSIM, PSNR and MSE of ``model.reconstruct`` over a dataset of x batches,
    plus the code histogram. Streams batch by batch."""
    ssim, psnr, mse, counts = [], [], [], np.zeros(model.num_codes, np.int64)
    for batch in dataset:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = np.asarray(x)
        idx = _numpy(model.encode(x))
        recon = _numpy(model.decode(idx))
        ssim.append(metrics.ssim(x, recon))
        psnr.append(metrics.psnr(x, recon))
        mse.append(np.mean((x - recon) ** 2, axis=(1, 2, 3)))
        if codes:
            counts += np.bincount(idx.ravel(), minlength=model.num_codes)
    if not ssim:
        raise BrainVQError("the evaluation split is empty: nothing to score")
    return {"ssim": np.concatenate(ssim), "psnr": np.concatenate(psnr),
            "mse": np.concatenate(mse), "code_counts": counts}


def vqvae_metrics(model, scores, train_seconds) -> dict:
    """The ``vqvae`` section of metrics.json from ``reconstruction_scores`` on the test split."""
    ssim = metrics.summarize(scores["ssim"], "test_ssim_")
    usage = metrics.codebook_stats(scores["code_counts"])
    finite_psnr = scores["psnr"][np.isfinite(scores["psnr"])]
    return {**ssim, "test_psnr_mean": float(finite_psnr.mean()) if finite_psnr.size else float("inf"),
            "codebook_size": int(model.num_codes), "codebook_used_fraction": usage["used_fraction"],
            "perplexity": usage["perplexity"], "latent_grid": list(model.latent_grid),
            "train_seconds": float(train_seconds), "test_images": int(len(scores["ssim"]))}


# ----------------------------------------------------------------------------- the prior
def compile_prior(model, learning_rate: float):
    """Adam on the cross-entropy of the codes; a masked-token prior averages it over the hidden
    codes only (its datasets carry the mask as sample weights, ``priors.mask_codes``)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def prior_builder(cfg, num_codes: int, grid, num_positions: int = 0, num_classes: int = 0, brain_codes=None):
    """``build()`` for ``train_prior``: the prior that ``cfg`` (a PriorConfig) describes over a
    VQ-VAE's ``num_codes`` codes on its ``grid``, in the precision ``cfg`` asks for, resolved
    once (``resolve_precision``) and kept as ``build.precision`` for the record (and the
    codebook size as ``build.num_codes``, the mask token of a masked-token prior). The two-level
    prior (``prior_arch="layout"``) also needs ``brain_codes`` (``pipeline.brain_codes``)."""
    from .priors import build_prior

    precision = devices_lib.resolve_precision(cfg.prior_precision)
    extra = {"brain_codes": [int(b) for b in brain_codes]} if cfg.prior_arch == "layout" and brain_codes is not None else {}

    def build():
        return build_prior(cfg.prior_arch, num_codes, grid, num_positions=num_positions, num_classes=num_classes,
                           seed=cfg.prior_seed, dtype=precision, **cfg.hyperparameters(num_positions), **extra)
    build.precision, build.num_codes = precision, int(num_codes)
    return build


def train_prior(train_ds, val_ds, cfg, build, run_dir, *, retrain=False, tensorboard=False, vqvae=None,
                verbose=None, devices="auto"):
    """Fit the prior on code maps (see ``fit_resumable``); ``build()`` returns an uncompiled prior
    (``prior_builder``). A prior trained in mixed precision is saved and returned in float32
    (``priors.float32_copy``); its checkpoints keep the training precision for a resume.
    The epoch logs gain ``bits_per_code`` and ``val_bits_per_code``. With a ``vqvae`` to decode them,
    4 samples are drawn every epoch (the same seed each time, at four slice levels spread over those of
    the validation maps) and kept (``epoch_images(run_dir, "prior")``; with ``tensorboard``, logged too)."""
    from . import priors

    images = None
    if vqvae is not None:
        conditions = _spread_conditions(val_ds, 4)
        images = sample_images(vqvae, n=4, seed=cfg.prior_seed, conditions=conditions)
    if priors.get(cfg.prior_arch).mask_token:
        train_ds = masked_code_dataset(train_ds, build.num_codes, seed=cfg.prior_seed)
        val_ds = masked_code_dataset(val_ds, build.num_codes, seed=cfg.prior_seed + 1)
    save_config(cfg, Path(run_dir) / "prior_config.json")
    return fit_resumable("prior", lambda: compile_prior(build(), cfg.prior_learning_rate), train_ds, run_dir,
                         epochs=cfg.prior_epochs, learning_rate=cfg.prior_learning_rate,
                         time_budget_s=cfg.prior_time_budget_s, seed=cfg.prior_seed, validation_data=val_ds,
                         monitors=lambda m: [BitsPerCode()], retrain=retrain, tensorboard=tensorboard,
                         tensorboard_images=images if tensorboard else None, epoch_images=images,
                         verbose=verbose, export=priors.float32_copy,
                         label=f"prior ({cfg.prior_arch})", devices=devices, batch_size=cfg.prior_batch_size)


def _spread_conditions(dataset, n: int) -> dict:
    """The conditioning of ``n`` maps of a dataset of (inputs, codes) batches, at slice levels spread from
    its lowest to its highest (the first class, where there are classes): what the epoch samples are drawn at."""
    found: dict = {}
    for inputs, _ in dataset:
        for key in ("position", "label"):
            if key in inputs:
                found.setdefault(key, []).append(np.asarray(inputs[key]))
    out = {k: np.concatenate(v) for k, v in found.items()}
    if "position" in out:
        levels = np.unique(out["position"])
        out["position"] = levels[np.linspace(0, len(levels) - 1, n).round().astype(int)]
    if "label" in out:
        out["label"] = np.full(n, out["label"][0])
    return out


def prior_scores(model, dataset) -> dict:
    """Bits per code (cross-entropy in bits, averaged over every position), accuracy, and
    the mean bits at each grid position, over a dataset of (inputs, codes) batches, as the
    prior's ``code_bits`` counts them (exact for the autoregressive priors)."""
    total_bits, total_hits, count, bits_map = 0.0, 0, 0, None
    for inputs, _ in dataset:
        bits, hits = model.code_bits({k: np.asarray(v) for k, v in inputs.items()})
        total_bits += bits.sum()
        total_hits += int(hits.sum())
        count += bits.size
        bits_map = bits.sum(0) if bits_map is None else bits_map + bits.sum(0)
    if not count:
        raise BrainVQError("the evaluation split has no code maps: nothing to score")
    n_maps = count // bits_map.size
    return {"bits_per_code": total_bits / count, "accuracy": total_hits / count, "bits_map": bits_map / n_maps}
