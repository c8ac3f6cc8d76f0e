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


# ----------------------------------------------------------------------------- many-pair SSIM
def gaussian_taps() -> np.ndarray:
    """The 1-D Gaussian whose outer product is the SSIM window (11 taps, sigma 1.5)."""
    size, sigma = SSIM_SETTINGS["filter_size"], SSIM_SETTINGS["filter_sigma"]
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _blur(x, taps):
    """Valid separable Gaussian blur of (N, H, W, 1): the window tf.image.ssim uses."""
    k = int(taps.shape[0])
    x = tf.nn.conv2d(x, tf.reshape(taps, (k, 1, 1, 1)), 1, "VALID")
    return tf.nn.conv2d(x, tf.reshape(taps, (1, k, 1, 1)), 1, "VALID")


def _moments(x, taps):
    x = tf.constant(x)
    return _blur(x, taps), _blur(x * x, taps)


def ssim_matrix(queries, references, block: int = 2 ** 24, reduce: str | None = None):
    """SSIM of every query against every reference image, batched.

    Each image's local mean and second moment are blurred once; per pair only the
    product ``x * y`` is blurred, so a pair costs one blur instead of five. With
    ``reduce="max"`` returns (best SSIM, index of the best reference) per query without
    keeping the full (Q, R) matrix; otherwise returns the matrix. Agrees with ``ssim``
    on each pair (tests/test_metrics.py).
    """
    q, r = _as_batch(queries, "queries"), _as_batch(references, "references")
    if q.shape[1:] != r.shape[1:]:
        raise BrainVQError(f"queries {q.shape[1:]} and references {r.shape[1:]} differ in size")
    c1 = (SSIM_SETTINGS["k1"] * SSIM_SETTINGS["max_val"]) ** 2
    c2 = (SSIM_SETTINGS["k2"] * SSIM_SETTINGS["max_val"]) ** 2
    taps = tf.constant(gaussian_taps())
    pixels = q.shape[1] * q.shape[2]
    step_r = max(1, min(len(r), block // pixels))
    best = np.full(len(q), -np.inf, np.float32)
    where = np.zeros(len(q), np.int64)
    rows = []
    q_mu, q_sq = _moments(q, taps)
    for j in range(0, len(r), step_r):
        r_part = r[j:j + step_r]
        r_mu, r_sq = _moments(r_part, taps)
        r_t = tf.constant(r_part)
        cols = []
        for i in range(len(q)):
            cross = _blur(q[i:i + 1] * r_t, taps)
            mu_q, mu_r = q_mu[i:i + 1], r_mu
            cov = cross - mu_q * mu_r
            var_q, var_r = q_sq[i:i + 1] - mu_q**2, r_sq - mu_r**2
            s = ((2 * mu_q * mu_r + c1) * (2 * cov + c2)) / ((mu_q**2 + mu_r**2 + c1) * (var_q + var_r + c2))
            cols.append(tf.reduce_mean(s, axis=(1, 2, 3)).numpy())
        part = np.stack(cols)                        # (Q, r_part)
        if reduce == "max":
            arg = part.argmax(axis=1)
            val = part[np.arange(len(q)), arg]
            better = val > best
            best[better], where[better] = val[better], arg[better] + j
        else:
            rows.append(part)
    if reduce == "max":
        return best, where
    return np.concatenate(rows, axis=1)


def nearest_neighbour_ssim(queries, references, **kw):
    """Each query's highest SSIM against every reference, and that reference's index."""
    return ssim_matrix(queries, references, reduce="max", **kw)


def mean_pairwise_ssim(images, max_images: int = 400, seed: int = 0) -> float:
    """Mean SSIM over all pairs of distinct images (a diversity score: lower is more diverse)."""
    images = _as_batch(images, "images")
    if len(images) > max_images:
        images = images[np.random.default_rng(seed).choice(len(images), max_images, replace=False)]
    if len(images) < 2:
        raise BrainVQError("diversity needs at least two images")
    m = ssim_matrix(images, images)
    upper = np.triu_indices(len(images), k=1)
    return float(m[upper].mean())
