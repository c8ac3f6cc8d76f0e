"""Training losses in ``keras.ops`` (any backend).

``ssim_loss`` is 1 - SSIM with exactly the settings of ``metrics.ssim`` (11x11
Gaussian window, sigma 1.5, k1 0.01, k2 0.03, valid padding), written with separable
convolutions so that it has gradients on TensorFlow, JAX and PyTorch. The metric stays
the reference; tests/test_losses.py checks that the two agree.
"""

from __future__ import annotations

import keras
from keras import ops

from .metrics import SSIM_SETTINGS, gaussian_taps


def _blur(x, taps):
    """Valid-padded separable Gaussian filter of (N, H, W, C=1) images."""
    k = int(taps.shape[0])
    x = ops.conv(x, ops.reshape(taps, (k, 1, 1, 1)), padding="valid")
    return ops.conv(x, ops.reshape(taps, (1, k, 1, 1)), padding="valid")


def ssim_per_image(a, b):
    """SSIM of each image pair (N,) in keras.ops, with the metric's settings."""
    c1 = (SSIM_SETTINGS["k1"] * SSIM_SETTINGS["max_val"]) ** 2
    c2 = (SSIM_SETTINGS["k2"] * SSIM_SETTINGS["max_val"]) ** 2
    taps = ops.convert_to_tensor(gaussian_taps())
    a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
    mu_a, mu_b = _blur(a, taps), _blur(b, taps)
    var_a = _blur(a * a, taps) - mu_a**2
    var_b = _blur(b * b, taps) - mu_b**2
    cov = _blur(a * b, taps) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ops.mean(ssim_map, axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="brainvq")
class MSEPlusSSIM(keras.losses.Loss):
    """Mean squared error + ``ssim_weight`` * (1 - SSIM), per image."""

    def __init__(self, ssim_weight=0.02, name="mse_plus_ssim", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ssim_weight = float(ssim_weight)

    def call(self, y_true, y_pred):
        mse = ops.mean((y_true - y_pred) ** 2, axis=(1, 2, 3))
        if not self.ssim_weight:
            return mse
        return mse + self.ssim_weight * (1.0 - ssim_per_image(y_true, y_pred))

    def get_config(self):
        return {**super().get_config(), "ssim_weight": self.ssim_weight}
