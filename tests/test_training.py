"""Training: monitors in the history, checkpoints and resume, time budget, bad values."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from brainvq_utils import devices, priors, training
from brainvq_utils.config import PriorConfig, VQVAEConfig
from brainvq_utils.errors import BrainVQError

TINY = dict(num_codes=16, code_dim=4, channels=8, res_blocks=1, learning_rate=3e-3)


def blobs(n=48, size=32, seed=0):
    """Bright discs on black: a tiny data set with structure to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(4, 9)
        out[i, ..., 0] = np.clip(1.2 - np.hypot(yy - cy, xx - cx) / r, 0, 1)
    return out


def datasets(x):
    train = tf.data.Dataset.from_tensor_slices(x).batch(8).map(lambda a: (a, a))
    return train, tf.data.Dataset.from_tensor_slices(x[:16]).batch(16)


def test_training_logs_monitors_and_saves(tmp_path):
    x = blobs()
    cfg = VQVAEConfig(epochs=3, **TINY)
    model, history = training.train_vqvae(*datasets(x), cfg, 32, tmp_path, verbose=0)
    for key in ("loss", "val_ssim", "val_mse", "codebook_usage", "perplexity", "learning_rate", "train_seconds"):
        assert len(history[key]) == 3, key
    assert history["loss"][-1] < history["loss"][0]
    assert 0 < history["codebook_usage"][-1] <= 1 and 1 <= history["perplexity"][-1] <= 16
    assert history["learning_rate"][-1] < history["learning_rate"][0]
    assert (tmp_path / "vqvae.keras").exists() and (tmp_path / "vqvae_config.json").exists()
    # the loss term by term (notebook 02 plots them): they add up to the loss, epoch by epoch
    terms = sum(np.asarray(history[k]) for k in ("recon_mse", "ssim_term", "vq_loss"))
    np.testing.assert_allclose(terms, history["loss"], rtol=1e-4)
    assert min(history["recon_mse"]) > 0 and min(history["ssim_term"]) > 0 and min(history["vq_loss"]) > 0
    # the same validation slices above their reconstructions, kept after every epoch
    kept = training.epoch_images(tmp_path, "vqvae")
    assert sorted(kept) == [f"reconstructions@{e}" for e in range(3)]
    assert kept["reconstructions@0"].shape == (4, 64, 32, 1)            # 4 slices (every 4th of 16), over 2 rows
    np.testing.assert_array_equal(kept["reconstructions@0"][:, :32], kept["reconstructions@2"][:, :32])
    assert np.abs(kept["reconstructions@0"][:, 32:] - kept["reconstructions@2"][:, 32:]).mean() > 0.005
    scores = training.reconstruction_scores(model, datasets(x)[1])
    section = training.vqvae_metrics(model, scores, history["train_seconds"][-1])
    assert section["latent_grid"] == [8, 8] and section["codebook_size"] == 16
    assert section["test_ssim_p05"] <= section["test_ssim_median"] <= 1
    # a second call loads the finished model instead of training again
    again, history2 = training.train_vqvae(*datasets(x), cfg, 32, tmp_path, verbose=0)
    assert history2["loss"] == history["loss"]


def test_the_same_seed_trains_the_same_model_and_another_seed_does_not(tmp_path):
    """The initial weights come from the seed too: before, two smoke runs with one seed differed
    in 22 numbers of metrics.json (the VQ-VAE was built from whatever the global generator held)."""
    x = blobs(n=16)
    fits = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        tf.random.uniform([7])                       # leave the global generators somewhere else each time
        model, history = training.train_vqvae(*datasets(x), VQVAEConfig(epochs=1, seed=seed, **TINY), 32,
                                              tmp_path / name, verbose=0)
        fits[name] = (history["loss"], [np.asarray(w) for w in model.get_weights()])
    assert fits["a"][0] == fits["b"][0]
    assert all(np.array_equal(u, v) for u, v in zip(fits["a"][1], fits["b"][1]))
    assert fits["a"][0] != fits["c"][0]


def test_time_budget_stops_training(tmp_path):
    x = blobs(n=64)
    cfg = VQVAEConfig(epochs=200, time_budget_s=3.0, **TINY)
    _, history = training.train_vqvae(*datasets(x), cfg, 32, tmp_path, verbose=0)
    assert len(history["loss"]) < 200
    assert history["train_seconds"][-1] < 3.0 + 30.0


def test_nan_loss_gives_a_clear_error(tmp_path):
    x = blobs(n=16)
    x[3, 5, 5, 0] = np.nan
    with pytest.raises(BrainVQError, match="loss became nan"):
        training.train_vqvae(*datasets(x), VQVAEConfig(epochs=1, **TINY), 32, tmp_path, verbose=0)


@pytest.mark.parametrize("epochs", [0, -3])
def test_epoch_count_must_be_positive(epochs):
    with pytest.raises(BrainVQError, match="epochs"):
        VQVAEConfig(epochs=epochs)


SCRIPT = """
import sys, numpy as np, tensorflow as tf
sys.path.insert(0, {tests!r})
from test_training import blobs, datasets, TINY
from brainvq_utils import devices, priors, training
from brainvq_utils.config import PriorConfig, VQVAEConfig
model, history = training.train_vqvae(*datasets(blobs(n=160)), VQVAEConfig(epochs=6, **TINY), 32, {run!r}, verbose=0)
print("EPOCHS", len(history["loss"]))
"""


def test_a_killed_run_resumes_from_its_last_finished_epoch(tmp_path):
    run = tmp_path / "run"
    script = SCRIPT.format(tests=str(Path(__file__).parent), run=str(run))
    state = run / "checkpoints" / "vqvae_state.json"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode != 0, "the training finished before it could be killed; make it longer"
    before = json.loads(state.read_text())
    assert not before["finished"] and not (run / "vqvae.keras").exists()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from the checkpoint of epoch {before['epoch'] + 1}" in done.stdout
    assert "EPOCHS 6" in done.stdout
    after = json.loads(state.read_text())
    assert after["finished"]
    n = before["epoch"] + 1
    assert after["history"]["loss"][:n] == before["history"]["loss"][:n]   # earlier epochs kept
    assert after["history"]["train_seconds"][-1] > before["history"]["train_seconds"][-1]


# ----------------------------------------------------------------------------- the prior
def stripes(n=64, grid=(4, 4), seed=0):
    """Code maps with learnable structure: each row repeats one code, the next row's is one more."""
    start = np.random.default_rng(seed).integers(0, 12, n)
    maps = (start[:, None, None] + np.arange(grid[0])[None, :, None]) % 16
    return np.broadcast_to(maps, (n, *grid)).astype(np.int32)


def prior_datasets(codes, positions):
    inputs = priors.prior_inputs(codes, positions)
    return priors.code_dataset(inputs, 8, shuffle=True), priors.code_dataset(inputs, 16)


def test_a_mixed_precision_prior_trains_in_bfloat16_and_is_saved_in_float32(tmp_path):
    import keras

    from brainvq_utils.priors import prior_info

    codes = stripes()
    cfg = PriorConfig(prior_arch="gated", prior_channels=8, prior_layers=2, prior_epochs=3, prior_batch_size=8,
                      prior_learning_rate=1e-2, prior_precision="mixed_bfloat16")
    build = training.prior_builder(cfg, 16, (4, 4), num_positions=4)
    prior, history = training.train_prior(*prior_datasets(codes, np.arange(64) % 4), cfg, build, tmp_path, verbose=0)
    assert build.precision == "mixed_bfloat16"
    assert history["val_loss"][-1] < history["val_loss"][0]
    # the checkpoint is the model as trained: every layer in mixed precision, for a resume
    trained = keras.saving.load_model(tmp_path / "checkpoints" / "prior_last.keras")
    assert {layer.dtype_policy.name for layer in trained._flatten_layers() if layer.name != "head2"} == \
        {"mixed_bfloat16"}
    # what is returned and saved computes in float32, with the very weights that were trained
    saved = keras.saving.load_model(tmp_path / "prior.keras")
    for model in (prior, saved):
        assert {layer.dtype_policy.name for layer in model._flatten_layers()} == {"float32"}
        for a, b in zip(model.get_weights(), trained.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert prior_info(saved) == prior_info(trained)
    x = priors.prior_inputs(codes[:8], np.arange(8) % 4)
    full, half = np.asarray(saved(x)), np.asarray(trained(x))
    assert half.dtype == np.float32                       # logits stay float32 ...
    assert 0 < np.abs(full - half).max() < 0.1 * np.abs(full).max()   # ... but came through bfloat16


def test_float32_training_saves_the_model_as_trained(tmp_path):
    codes = stripes()
    cfg = PriorConfig(prior_arch="gated", prior_channels=8, prior_layers=1, prior_epochs=1, prior_batch_size=8)
    prior, _ = training.train_prior(*prior_datasets(codes, None), cfg, training.prior_builder(cfg, 16, (4, 4)),
                                    tmp_path, verbose=0)
    assert prior.dtype_policy.name == "float32" and prior.optimizer is not None


def test_auto_precision_picks_bfloat16_only_where_the_cpu_has_it(tmp_path):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16\n")
    without.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    assert devices.cpu_has_native_bfloat16(with_bf16)
    assert not devices.cpu_has_native_bfloat16(without)
    assert not devices.cpu_has_native_bfloat16(tmp_path / "missing")
    assert devices.resolve_precision("auto", without) == "float32"
    assert devices.resolve_precision("float32", with_bf16) == "float32"
    assert devices.resolve_precision("mixed_bfloat16", without) == "mixed_bfloat16"
    import keras
    if all(str(d).lower().startswith("cpu") for d in keras.distribution.list_devices()):
        assert devices.resolve_precision("auto", with_bf16) == "mixed_bfloat16"


def test_auto_precision_on_a_gpu_follows_its_bfloat16_support(tmp_path, monkeypatch):
    import keras
    assert devices.gpu_has_bfloat16({"compute_capability": (8, 0), "device_name": "NVIDIA A100"})
    assert devices.gpu_has_bfloat16({"compute_capability": (9, 0)})
    assert not devices.gpu_has_bfloat16({"compute_capability": (7, 5), "device_name": "Tesla T4"})
    assert not devices.gpu_has_bfloat16({})
    assert devices.gpu_has_bfloat16({"compute_capability": "8.6"})                 # as JAX writes it
    assert not devices.gpu_has_bfloat16({"compute_capability": "7.0"})
    without = tmp_path / "b"
    without.write_text("processor : 0\nflags : fpu sse2 avx2\n")
    monkeypatch.setattr(keras.distribution, "list_devices", lambda *a: ["gpu:0"])
    assert devices.resolve_precision("auto", without, gpu_bfloat16=True) == "mixed_bfloat16"
    assert devices.resolve_precision("auto", without, gpu_bfloat16=False) == "float32"
    assert devices.resolve_precision("float32", without, gpu_bfloat16=True) == "float32"


def test_masked_training_data_hides_a_cosine_share_of_codes_anew_every_epoch():
    import tensorflow as tf
    codes = stripes(n=256)
    ds = priors.masked_code_dataset(priors.code_dataset(priors.prior_inputs(codes), 64), mask_token=16, seed=3)
    assert ds.cardinality() == 4                                         # Keras knows an epoch's length
    epochs = [list(ds.as_numpy_iterator()) for _ in range(2)]
    inputs, targets, weights = (np.concatenate(parts) for parts in zip(*[(x["codes"], y, w) for x, y, w in epochs[0]]))
    np.testing.assert_array_equal(targets, codes)                       # the targets are the true codes
    hidden = inputs == 16
    np.testing.assert_array_equal(hidden, weights > 0)                  # the loss sees the hidden codes only
    per_map = weights.reshape(len(codes), -1)                           # each map's hidden codes weigh 1 in all
    np.testing.assert_allclose(per_map.sum(1) / per_map.shape[1], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(inputs[~hidden], codes[~hidden])      # the others are shown as they are
    share = hidden.reshape(len(codes), -1).mean(1)
    assert share.min() > 0 and share.max() <= 1.0
    # E[cos(pi r / 2)] = 2 / pi for r ~ U(0, 1)
    assert abs(share.mean() - 2 / np.pi) < 0.06, share.mean()
    second = np.concatenate([w for _, _, w in epochs[1]])
    assert not np.array_equal(second, weights)                          # new masks every epoch
    again = np.concatenate([w for _, _, w in priors.masked_code_dataset(
        priors.code_dataset(priors.prior_inputs(codes), 64), 16, seed=3).as_numpy_iterator()])
    np.testing.assert_array_equal(again, weights)                       # seeded
    assert tf.is_tensor(priors.mask_codes(tf.constant(codes[:2]), 16, tf.constant([1, 2], tf.int64))[0])


def test_a_maskgit_prior_trains_on_masked_codes(tmp_path):
    codes = stripes()
    cfg = PriorConfig(prior_arch="maskgit", maskgit_channels=16, maskgit_layers=1, maskgit_heads=2, maskgit_patch=2,
                      prior_epochs=4, prior_batch_size=8, prior_learning_rate=1e-2)
    build = training.prior_builder(cfg, 16, (4, 4), num_positions=4)
    prior, history = training.train_prior(*prior_datasets(codes, np.arange(64) % 4), cfg, build, tmp_path, verbose=0)
    assert history["val_loss"][-1] < history["val_loss"][0] and np.isfinite(history["loss"]).all()
    scores = training.prior_scores(prior, priors.code_dataset(priors.prior_inputs(codes, np.arange(64) % 4), 16))
    assert 0 < scores["bits_per_code"] < 4 and scores["bits_map"].shape == (4, 4)
