"""The callbacks that watch a fit: codebook usage, the cosine schedule, the clock, bits
per code, the status line, and the images kept every epoch for the notebooks (``epoch_images``).
``training.fit_resumable`` attaches them; they never change what is learned, except
``CosineByProgress`` (the learning rate) and ``TrainClock`` (stops at the time budget, and at a NaN loss).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from . import metrics, progress
from .errors import BrainVQError
from .runs import atomic_path

CHECKPOINT_DIR = "checkpoints"


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


class CodebookMonitor(keras.callbacks.Callback):
    """Codebook usage (fraction of codes won at least once) and perplexity per epoch."""

    def __init__(self, quantizer):
        super().__init__()
        self.quantizer = quantizer

    def on_epoch_begin(self, epoch, logs=None):
        self.quantizer.usage_counts.assign(np.zeros(self.quantizer.num_codes, np.float32))

    def on_epoch_end(self, epoch, logs=None):
        stats = metrics.codebook_stats(_numpy(self.quantizer.usage_counts))
        logs["codebook_usage"] = stats["used_fraction"]
        logs["perplexity"] = stats["perplexity"]
        logs["restarts"] = float(_numpy(self.quantizer.restarts))


class CosineByProgress(keras.callbacks.Callback):
    """Cosine learning rate, set at each epoch from the share of epochs or time used.

    Progress is the larger of (epochs done / epochs) and (seconds used / time budget),
    so a time-limited run still ends at a low learning rate.
    """

    def __init__(self, base_lr, epochs, budget_s, clock, floor=0.05):
        super().__init__()
        self.base_lr, self.epochs, self.budget_s = base_lr, epochs, budget_s
        self.clock, self.floor = clock, floor

    def on_epoch_begin(self, epoch, logs=None):
        progress = epoch / self.epochs
        if self.budget_s:
            progress = max(progress, self.clock.seconds() / self.budget_s)
        scale = self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        self.model.optimizer.learning_rate.assign(self.base_lr * scale)

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(_numpy(self.model.optimizer.learning_rate))


class TrainClock(keras.callbacks.Callback):
    """Counts training seconds (earlier sessions included) and enforces the budget."""

    def __init__(self, spent_s=0.0, budget_s=0.0):
        super().__init__()
        self.spent_s, self.budget_s, self._start = spent_s, budget_s, None

    def seconds(self):
        return self.spent_s + (time.perf_counter() - self._start if self._start else 0.0)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise BrainVQError(
                f"the training loss became {float(loss)} at batch {batch}; lower learning_rate "
                f"(e.g. -p learning_rate=5e-4) or check the input images for NaN values")
        if self.budget_s and self.seconds() >= self.budget_s:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs["train_seconds"] = self.seconds()


class BitsPerCode(keras.callbacks.Callback):
    """A prior's cross-entropy in bits per code (its loss, in nats, over ln 2), train and
    validation; for a masked-token prior, in bits per hidden code (each map's mean over its
    hidden codes, averaged over maps: ``priors.mask_codes``)."""

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            if key in logs:
                logs[key.replace("loss", "bits_per_code")] = float(logs[key]) / math.log(2)


class ProgressReport(keras.callbacks.Callback):
    """Where training stands, as one status line for ``brainvq run`` (``progress.report``):
    the epoch, the step, the loss and the time left of the budget, at most every second."""

    def __init__(self, name, epochs, clock, every_s=1.0):
        super().__init__()
        self.name, self.epochs, self.clock, self.every_s = name, epochs, clock, every_s
        self._epoch, self._last = 0, -math.inf

    def _report(self, step=None, logs=None):
        parts = [f"{self.name}: epoch {self._epoch + 1}/{self.epochs}"]
        steps = (self.params or {}).get("steps")
        if step is not None:
            parts.append(f"step {step + 1}/{steps}" if steps else f"step {step + 1}")
        if logs and logs.get("loss") is not None:
            parts.append(f"loss {float(logs['loss']):.4g}")
        if self.clock.budget_s:
            parts.append(f"{max(0.0, self.clock.budget_s - self.clock.seconds()):.0f} s of the "
                         f"{self.clock.budget_s:.0f} s budget left")
        progress.report(", ".join(parts))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._report()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self._report(batch, logs)


class EpochImages(keras.callbacks.Callback):
    """After every epoch, ``make_images(model)`` (name -> (N, H, W, 1) images in [0, 1]) kept as 8-bit
    images in ``folder/<name>_epoch_images.npz`` (``epoch_images`` reads them back), so that a
    notebook can show the model getting better; a resumed fit adds to what the killed one kept."""

    def __init__(self, folder, name, make_images):
        super().__init__()
        self.path, self.make_images = Path(folder) / f"{name}_epoch_images.npz", make_images

    def on_epoch_end(self, epoch, logs=None):
        kept = epoch_images(self.path.parent.parent, self.path.name.removesuffix("_epoch_images.npz"), as_uint8=True)
        for key, images in self.make_images(self.model).items():
            kept[f"{key}@{epoch}"] = np.round(np.clip(np.asarray(images, np.float32), 0, 1) * 255).astype(np.uint8)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            np.savez_compressed(tmp, **kept)


def epoch_images(run_dir, name: str, as_uint8: bool = False) -> dict:
    """What ``EpochImages`` kept for the model ``name`` ("vqvae" or "prior") of a run:
    ``{"samples@0": (N, H, W, 1), "samples@1": ...}`` in [0, 1] (or as stored, ``as_uint8``)."""
    path = Path(run_dir) / CHECKPOINT_DIR / f"{name}_epoch_images.npz"
    if not path.exists():
        return {}
    with np.load(path) as f:
        return {k: (f[k] if as_uint8 else f[k].astype(np.float32) / 255.0) for k in f.files}
