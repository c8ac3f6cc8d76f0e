"""TensorBoard logs of a training run (``tensorboard=True``; ``-p tensorboard=true``).

``<run_dir>/logs/<model>/`` gets, every epoch:

- ``train/`` and ``validation/``: the scalars of the epoch logs, written by Keras' own
  ``keras.callbacks.TensorBoard``: the losses, and what the monitors add (VQ-VAE: validation
  SSIM, codebook usage and perplexity, restarts, learning rate; prior: bits per code).
- ``images/``: pictures, written here with ``tf.summary.image``: for the VQ-VAE a fixed set of
  validation slices beside their reconstructions; for a prior a few code maps drawn from it,
  decoded by the VQ-VAE.

Open them with ``tensorboard --logdir runs/<run>/logs`` (or ``%load_ext tensorboard`` and
``%tensorboard --logdir ...`` inside JupyterLab or Colab). TensorFlow writes the files under
any Keras backend. ``read_tags`` reads them back (tests/test_tensorboard.py). Drawing the
samples takes a few seconds an epoch, and counts against the prior's time budget.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

IMAGES_DIR = "images"


def _writer(log_dir):
    import tensorflow as tf
    return tf.summary.create_file_writer(str(log_dir))


def _strip(images) -> np.ndarray:
    """(N, H, W, 1) images in [0, 1] as one row (1, H, N*W, 1), for a single picture."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    return np.concatenate(list(images), axis=1)[None]


class ImageLog(keras.callbacks.Callback):
    """Every epoch, ``make_images(model)`` (a dict of name to (N, H, W, 1) images in [0, 1]),
    each written as one picture with ``tf.summary.image`` to ``log_dir``."""

    def __init__(self, log_dir, make_images, every: int = 1):
        super().__init__()
        self.log_dir, self.make_images, self.every = Path(log_dir), make_images, max(1, int(every))
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        import tensorflow as tf
        if self._writer is None:
            self._writer = _writer(self.log_dir)
        with self._writer.as_default():
            for name, images in self.make_images(self.model).items():
                tf.summary.image(name, _strip(images), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def reconstruction_images(fixed_images):
    """``make_images`` for a VQ-VAE: the same validation slices every epoch, above their
    reconstructions."""
    fixed = np.asarray(fixed_images, np.float32)

    def make(model):
        recon = keras.ops.convert_to_numpy(model.reconstruct(fixed))
        return {"reconstructions": np.concatenate([fixed, recon], axis=1)}
    return make


def sample_images(vqvae, n: int = 4, seed: int = 0, conditions: dict | None = None):
    """``make_images`` for a prior: ``n`` code maps drawn from it with the same seed every epoch
    (at ``conditions``' slice positions / classes where the prior has them), decoded by ``vqvae``."""
    from . import sampling
    from .priors import prior_info

    def make(prior):
        info = prior_info(prior)
        kw = {k: np.asarray(v)[:n] for k, v in (conditions or {}).items()
              if (k == "position" and info["num_positions"]) or (k == "label" and info["num_classes"])}
        steps = min(12, info["grid"][0] * info["grid"][1])       # iterative priors: decoding steps
        codes = sampling.sample(prior, n, seed=seed, progress=False, steps=steps, **kw)
        return {"samples": keras.ops.convert_to_numpy(vqvae.decode(codes))}
    return make


def callbacks(log_dir, make_images=None) -> list:
    """Keras' TensorBoard callback for the scalars, and the image log if ``make_images``."""
    log_dir = Path(log_dir)
    out = [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)]
    if make_images is not None:
        out.append(ImageLog(log_dir / IMAGES_DIR, make_images))
    return out


def read_tags(log_dir) -> dict:
    """What the event files under ``log_dir`` hold: ``{"<subdir>/<tag>": (kind, steps)}`` with
    kind ``"scalar"`` or ``"image"`` and the sorted steps written, read back with TensorFlow."""
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2   # TensorBoard's own record format

    found: dict = {}
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        sub = path.parent.relative_to(log_dir).as_posix()
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                kind = "image" if plugin == "images" else "scalar" if plugin == "scalars" else plugin or "other"
                key = f"{sub}/{value.tag}"
                steps = found.setdefault(key, (kind, set()))[1]
                steps.add(int(event.step))
    return {key: (kind, sorted(steps)) for key, (kind, steps) in found.items()}
