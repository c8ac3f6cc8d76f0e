"""The keras.ops SSIM used in the loss agrees with the reference metric."""

import keras
import numpy as np

from brainvq_utils import losses, metrics
from brainvq_utils.synthetic import render_subject


def test_ops_ssim_matches_the_metric_on_brains_and_noise():
    rng = np.random.default_rng(0)
    brains = render_subject(1, seed=3, size=64, slices=6)[..., None]
    noisy = np.clip(brains + rng.normal(0, 0.05, brains.shape), 0, 1).astype("float32")
    other = render_subject(2, seed=3, size=64, slices=6)[..., None]
    uniform = rng.uniform(size=(6, 48, 40, 1)).astype("float32")
    for a, b in ((brains, noisy), (brains, other), (uniform, uniform[::-1])):
        ours = keras.ops.convert_to_numpy(losses.ssim_per_image(a, b))
        np.testing.assert_allclose(ours, metrics.ssim(a, b), atol=1e-4)


def test_loss_is_mse_plus_weighted_dissimilarity():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(3, 32, 32, 1)).astype("float32")
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype("float32")
    mse = ((a - b) ** 2).mean()
    plain = float(keras.ops.convert_to_numpy(losses.MSEPlusSSIM(0.0)(a, b)))
    mixed = float(keras.ops.convert_to_numpy(losses.MSEPlusSSIM(0.5)(a, b)))
    np.testing.assert_allclose(plain, mse, rtol=1e-5)
    np.testing.assert_allclose(mixed, mse + 0.5 * (1 - metrics.ssim(a, b).mean()), rtol=1e-4)
    assert float(keras.ops.convert_to_numpy(losses.MSEPlusSSIM(0.5)(a, a))) < 1e-6
