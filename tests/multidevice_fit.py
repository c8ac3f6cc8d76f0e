"""Fit a small VQ-VAE and small priors on N of 2 virtual CPU devices; print what they became.

    KERAS_BACKEND=jax python tests/multidevice_fit.py --devices 2 --run-dir DIR [--epochs 2]
        [--models vqvae gated maskgit]

Used by tests/test_devices.py, each call in its own process: the CPU must be split into
devices before the backend starts. The data are fixed (seeded) images and code maps, in
global batches of 8 that are never shuffled, so that 1 and 2 devices see the same batches.
Prints one JSON line: per model, the epoch losses, and for the VQ-VAE its codebook, EMA
counts, usage and restarts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainvq_utils import devices  # noqa: E402  (imports no backend)

IMAGE, BATCH, IMAGES = 16, 8, 32


def images(np):
    """Smooth, seeded 'slices': a few Gaussian blobs each, in [0, 1]."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:IMAGE, 0:IMAGE] / IMAGE
    out = np.zeros((IMAGES, IMAGE, IMAGE, 1), np.float32)
    for img in out:
        for _ in range(3):
            cy, cx, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            img[..., 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return np.clip(out, 0, 1)


def fit_vqvae(args, run_dir):
    import numpy as np
    import tensorflow as tf

    from brainvq_utils import training
    from brainvq_utils.config import VQVAEConfig

    x = images(np)
    train_ds = tf.data.Dataset.from_tensor_slices((x, x)).batch(BATCH)
    val_ds = tf.data.Dataset.from_tensor_slices(x[:16]).batch(BATCH)
    cfg = VQVAEConfig(num_codes=16, code_dim=4, channels=16, res_blocks=1, epochs=args.epochs, learning_rate=2e-3,
                      seed=3)
    model, history = training.train_vqvae(train_ds, val_ds, cfg, IMAGE, run_dir, verbose=0, devices=args.devices,
                                          batch_size=BATCH)
    q = model.quantizer
    value = lambda v: np.asarray(v).tolist()  # noqa: E731
    return {"history": history, "codebook": value(q.codebook), "ema_count": value(q.ema_count),
            "usage_counts": value(q.usage_counts), "restarts": float(np.asarray(q.restarts)),
            "reconstruction": value(model.reconstruct(x[:2]))}


def fit_prior(args, run_dir, arch):
    import numpy as np

    from brainvq_utils import priors, training
    from brainvq_utils.config import PriorConfig

    rng = np.random.default_rng(1)
    codes = rng.integers(0, 8, (IMAGES, 4, 4))
    codes[:, :2] = codes[:, 2:]          # something to learn
    positions = np.arange(IMAGES) % 4
    train_in = priors.prior_inputs(codes, positions)
    train_ds = priors.code_dataset(train_in, BATCH)
    val_ds = priors.code_dataset(priors.prior_inputs(codes[:16], positions[:16]), BATCH)
    cfg = PriorConfig(prior_arch=arch, prior_channels=8, prior_layers=2, maskgit_channels=16, maskgit_layers=1,
                      maskgit_heads=2, prior_epochs=args.epochs, prior_learning_rate=3e-3, prior_batch_size=BATCH)
    build = training.prior_builder(cfg, 8, (4, 4), num_positions=4)
    model, history = training.train_prior(train_ds, val_ds, cfg, build, run_dir, verbose=0, devices=args.devices)
    return {"history": history, "weights": [float(np.abs(w).sum()) for w in model.get_weights()]}


def fixed_masks():
    """MaskGIT's masks, drawn anew each pass over the data, the same on every pass: TensorFlow's
    distributed input makes one extra pass before training, so re-drawn masks (and shuffles)
    would differ between 1 and 2 devices for that reason alone."""
    import functools

    from brainvq_utils import training
    training.masked_code_dataset = functools.partial(training.masked_code_dataset, rerandomize=False)


def record_placement(out):
    """On how many devices each fit's first weight lives (a wrapper around Model.fit)."""
    import keras

    fit = keras.Model.fit

    def placed_fit(self, *args, **kwargs):
        value = self.trainable_variables[0].value
        if keras.backend.backend() == "jax":
            out.append(len(value.sharding.device_set))
        else:
            out.append(len(getattr(value, "values", [value])))
        return fit(self, *args, **kwargs)

    keras.Model.fit = placed_fit


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", default="1")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["vqvae", "gated", "maskgit"])
    parser.add_argument("--virtual", type=int, default=2, help="split the CPU into this many devices")
    args = parser.parse_args()
    devices.virtual_cpus(args.virtual)
    import keras

    fixed_masks()
    out = {"backend": keras.backend.backend(), "devices": devices.resolve(args.devices), "placed_on": []}
    record_placement(out["placed_on"])
    for name in args.models:
        run_dir = args.run_dir / name
        out[name] = fit_vqvae(args, run_dir) if name == "vqvae" else fit_prior(args, run_dir, name)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
