"""Image-quality and codebook metrics: one implementation each.

SSIM follows DESIGN.md: ``tf.image.ssim`` on [0, 1] floats with ``max_val=1``, an 11x11
Gaussian window of sigma 1.5, k1 = 0.01 and k2 = 0.03, averaged over the valid part of
the SSIM map, one value per image. With these settings it matches
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0)`` (tests/test_metrics.py checks 1e-3).

SSIM compares local means (luminance), variances (contrast) and covariance (structure)
in each window; 1 means identical. Flat black background counts as a perfect match
only when both images are exactly black there, so a decoder that leaves faint grey
haze in the background is punished, as it should be.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .errors import BrainVQError

SSIM_SETTINGS = dict(max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)


def _as_batch(images, name):
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None, ..., None]
    elif arr.ndim == 3:
        arr = arr[..., None] if arr.shape[-1] != 1 else arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 1:
        raise BrainVQError(f"{name} must be grey images (N, H, W, 1); got shape {arr.shape}")
    if min(arr.shape[1:3]) < SSIM_SETTINGS["filter_size"]:
        raise BrainVQError(f"{name} of size {arr.shape[1:3]} is smaller than the 11x11 SSIM window")
    return arr


def ssim(a, b, batch_size: int = 256) -> np.ndarray:
    """Per-image SSIM of two equally shaped batches (N, H, W, 1) in [0, 1] -> (N,)."""
    a, b = _as_batch(a, "first images"), _as_batch(b, "second images")
    if a.shape != b.shape:
        raise BrainVQError(f"SSIM needs equal shapes; got {a.shape} and {b.shape}")
    out = [tf.image.ssim(tf.constant(a[i:i + batch_size]), tf.constant(b[i:i + batch_size]),
                         **SSIM_SETTINGS).numpy() for i in range(0, len(a), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def psnr(a, b) -> np.ndarray:
    """Per-image PSNR in dB for images in [0, 1]; identical images give +inf."""
    a, b = _as_batch(a, "first images"), _as_batch(b, "second images")
    if a.shape != b.shape:
        raise BrainVQError(f"PSNR needs equal shapes; got {a.shape} and {b.shape}")
    mse = np.mean((a.astype(np.float64) - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return (10.0 * np.log10(1.0 / mse)).astype(np.float32)


def summarize(values, prefix: str = "") -> dict:
    """Mean, median and 5th percentile of a score over every image."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise BrainVQError(f"no values to summarise for {prefix or 'a score'}: is the split empty?")
    return {f"{prefix}mean": float(values.mean()), f"{prefix}median": float(np.median(values)),
            f"{prefix}p05": float(np.percentile(values, 5))}


def codebook_stats(counts) -> dict:
    """Fraction of codes used and perplexity exp(H(p)) of a code histogram.

    Perplexity is the effective number of codes: K when all are used equally often,
    1 when one code takes everything.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return {"used_fraction": 0.0, "perplexity": 0.0, "dead_codes": int(counts.size)}
    p = counts[counts > 0] / total
    return {"used_fraction": float((counts > 0).mean()),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            "dead_codes": int((counts == 0).sum())}
