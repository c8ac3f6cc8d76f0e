"""The VQ-VAE layers and model: quantisation, estimator, codebook updates, saving.

Backend-agnostic: tests/test_backends.py runs this file again under JAX.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from brainvq_utils.errors import BrainVQError
from brainvq_utils.vqvae import VectorQuantizer, build_vqvae


def np_(x):
    return keras.ops.convert_to_numpy(x)


def quantizer(k=8, d=4, **kw):
    q = VectorQuantizer(k, d, seed=1, **kw)
    q.build((None, 2, 2, d))
    return q


def test_indices_are_nearest_codes():
    q = quantizer(k=16, d=3, restart_below=0)
    book = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    q.base.assign(book)
    z = np.random.default_rng(1).normal(size=(5, 4, 4, 3)).astype("float32")
    expected = np.argmin(((z[..., None, :] - book) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(np_(q.indices(z)), expected)
    np.testing.assert_allclose(np_(q(z)), book[expected], atol=1e-6)
    np.testing.assert_allclose(np_(q.lookup(expected)), book[expected], atol=1e-6)


def _grad_sum_of_weighted_output(layer, z, w):
    """d/dz sum(w * layer(z)) on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        zt = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(zt)
            out = tf.reduce_sum(w * layer(zt))
        return tape.gradient(out, zt).numpy()
    if backend == "jax":
        import jax
        return np.asarray(jax.grad(lambda t: (w * layer(t)).sum())(z))
    if backend == "torch":
        import torch
        zt = torch.tensor(z, requires_grad=True)
        (torch.tensor(w) * layer(zt)).sum().backward()
        return zt.grad.numpy()
    pytest.skip(f"no gradient helper for {backend}")


def test_straight_through_estimator_copies_the_gradient():
    q = quantizer(k=8, d=4, restart_below=0)
    z = np.random.default_rng(2).normal(size=(2, 3, 3, 4)).astype("float32")
    w = np.random.default_rng(3).normal(size=z.shape).astype("float32")
    # the output is the code, yet its gradient with respect to z is exactly the upstream one
    assert not np.allclose(np_(q(z)), z)
    np.testing.assert_allclose(_grad_sum_of_weighted_output(q, z, w), w, rtol=1e-5, atol=1e-6)


def test_first_training_batch_initialises_the_codebook_from_encoder_outputs():
    q = quantizer(k=8, d=4)
    z = np.random.default_rng(4).normal(size=(4, 8, 8, 4)).astype("float32")
    q(z, training=True)
    book = np_(q.codebook)
    flat = z.reshape(-1, 4)
    dist = ((book[:, None, :] - flat[None]) ** 2).sum(-1).min(axis=1)
    assert np.all(dist < 1e-10), "every code should be a copy of an encoder output"
    assert float(np_(q.restarts)) == 8


def test_ema_update_matches_the_formula():
    k, d, decay, eps = 4, 2, 0.9, 1e-5
    q = quantizer(k=k, d=d, decay=decay, epsilon=eps, restart_below=0)
    book = np.array([[0, 0], [1, 0], [0, 1], [5, 5]], "float32")
    q.base.assign(book)
    q.ema_sum.assign(book * 2.0)
    q.ema_count.assign(np.full(k, 2.0, "float32"))
    z = np.array([[0.1, 0.0], [0.9, 0.1], [1.1, 0.0], [0.0, 0.8]], "float32").reshape(1, 2, 2, 2)
    q(z, training=True)
    flat = z.reshape(-1, d)
    idx = np.argmin(((flat[:, None] - book) ** 2).sum(-1), axis=1)
    onehot = np.eye(k)[idx]
    count = decay * 2.0 + (1 - decay) * onehot.sum(0)
    total = decay * book * 2.0 + (1 - decay) * onehot.T @ flat
    n = count.sum()
    expected = total / ((count + eps) / (n + k * eps) * n)[:, None]
    np.testing.assert_allclose(np_(q.codebook), expected, rtol=1e-5)
    np.testing.assert_allclose(np_(q.usage_counts), onehot.sum(0))


def test_dead_codes_are_restarted_from_encoder_outputs():
    q = quantizer(k=4, d=2, restart_below=1.0)
    book = np.array([[0, 0], [1, 1], [50, 50], [-50, 50]], "float32")  # codes 2, 3 never win
    q.base.assign(book)
    q.ema_sum.assign(book * 10.0)
    q.ema_count.assign(np.array([10.0, 10.0, 0.5, 0.5], "float32"))
    z = np.random.default_rng(5).uniform(0, 1, size=(1, 4, 4, 2)).astype("float32")
    q(z, training=True)
    new = np_(q.codebook)
    flat = z.reshape(-1, 2)
    for code in (2, 3):
        assert ((flat - new[code]) ** 2).sum(-1).min() < 1e-10, f"code {code} was not restarted"
    assert np.abs(new[:2] - book[:2]).max() < 0.2, "live codes should only move a little"
    assert float(np_(q.restarts)) == 2


def test_gradient_codebook_trains_and_restarts():
    q = quantizer(k=4, d=2, update="gradient")
    assert [v.name for v in q.trainable_weights] == ["delta"]
    z = np.random.default_rng(6).normal(size=(1, 4, 4, 2)).astype("float32")
    q.delta.assign(np.full((4, 2), 0.5, "float32"))
    before = np_(q.codebook)
    quantized = before[np_(q.indices(z))]
    q(z, training=True)   # all counts start at zero: every code restarts to an encoder output
    book = np_(q.codebook)
    assert np.all(((book[:, None] - z.reshape(-1, 2)[None]) ** 2).sum(-1).min(1) < 1e-10)
    expected = (q.beta + 1.0) * np.mean((z - quantized) ** 2)   # commitment + codebook terms
    assert abs(float(np_(q.vq_loss())) - expected) < 1e-6 * max(expected, 1.0)


@pytest.mark.parametrize("kwargs", [dict(update="both"), dict(num_codes=1), dict(decay=1.0)])
def test_bad_quantizer_parameters(kwargs):
    with pytest.raises(BrainVQError):
        VectorQuantizer(**{"num_codes": 8, "code_dim": 4, **kwargs})


def test_image_size_must_divide_by_the_downsampling_factor():
    with pytest.raises(BrainVQError, match="100 is not divisible by the VQ-VAE downsampling factor 8"):
        build_vqvae((100, 100), downsample=8)
    with pytest.raises(BrainVQError, match="downsampling factor 3"):
        build_vqvae((96, 96), downsample=3)


@pytest.mark.parametrize("downsample,arch", [(4, "residual"), (8, "residual"), (4, "keras_io")])
def test_model_shapes(downsample, arch):
    model = build_vqvae((32, 32), num_codes=16, code_dim=4, channels=16, res_blocks=1,
                        downsample=downsample, architecture=arch)
    x = np.random.default_rng(7).uniform(size=(2, 32, 32, 1)).astype("float32")
    assert model.latent_grid == (32 // downsample, 32 // downsample)
    assert np_(model(x)).shape == x.shape
    codes = np_(model.encode(x))
    assert codes.shape == (2, *model.latent_grid) and codes.dtype == np.int32
    out = np_(model.decode(codes))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_saved_model_loads_in_a_fresh_process(tmp_path):
    model = build_vqvae((32, 32), num_codes=16, code_dim=4, channels=16, res_blocks=1)
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(8).uniform(size=(3, 32, 32, 1)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)      # moves the codebook away from its initial values
    path = tmp_path / "vqvae.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np_(model(x)))
    code = ("import numpy as np, keras, brainvq_utils, sys\n"
            f"m = keras.saving.load_model({str(path)!r})\n"
            f"x = np.load({str(tmp_path / 'x.npy')!r}); y = np.load({str(tmp_path / 'y.npy')!r})\n"
            "out = keras.ops.convert_to_numpy(m(x))\n"
            "assert out.shape == x.shape, out.shape\n"
            "np.testing.assert_allclose(out, y, atol=1e-4)\n"
            "print('ok', type(m).__name__, keras.backend.backend())\n")
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": backend}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{backend}: {done.stderr[-2000:]}"
        assert f"ok VQVAE {backend}" in done.stdout
