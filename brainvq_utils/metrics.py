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
from .images import as_images
from .progress import Bar

SSIM_SETTINGS = dict(max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)
BRAIN_LEVEL = 0.1   # grey level above which a pixel is brain tissue (real backgrounds are exactly 0)


def _as_batch(images, name):
    """``images.as_images`` (uint8 scaled to [0, 1]; NaN, out-of-range or colour refused), at least as large
    as the SSIM window."""
    arr = as_images(images, name)
    if min(arr.shape[1:3]) < SSIM_SETTINGS["filter_size"]:
        raise BrainVQError(f"{name} of size {arr.shape[1:3]} is smaller than the 11x11 SSIM window")
    return arr


def ssim(a, b, batch_size: int = 256) -> np.ndarray:
    """Per-image SSIM of two equally shaped batches (N, H, W, 1) in [0, 1] -> (N,); uint8 images are
    scaled to [0, 1] first (``images.as_images``)."""
    a, b = _as_batch(a, "ssim's first images"), _as_batch(b, "ssim's second images")
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


def _blur_channels(x, taps):
    """Valid separable Gaussian blur of every channel of (N, H, W, C): the SSIM window.

    Depthwise convolution over many channels vectorises well on CPUs, so the images
    to blur sit on the channel axis (16x faster here than one-channel convolutions)."""
    k, c = int(taps.shape[0]), int(x.shape[-1])
    x = tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(taps, (k, 1, 1, 1)), (1, 1, c, 1)), [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(taps, (1, k, 1, 1)), (1, 1, c, 1)), [1, 1, 1, 1], "VALID")


@tf.function
def _ssim_block(q, q_mu, q_sq, r, r_mu, r_sq, taps, c1, c2):
    """SSIM of queries (Qb, H, W, 1) against references on channels (1, H, W, Rb) -> (Qb, Rb)."""
    return tf.reduce_mean(_ssim_map(q, q_mu, q_sq, r, r_mu, r_sq, taps, c1, c2), axis=(1, 2))


@tf.function
def _ssim_block_masked(q, q_mu, q_sq, r, r_mu, r_sq, q_mask, r_mask, taps, c1, c2):
    """Like ``_ssim_block``, and also the mean over the union of the two brain masks
    (cropped to the valid SSIM map: (Qb, H', W', 1) and (1, H', W', Rb)) -> 2 x (Qb, Rb)."""
    s = _ssim_map(q, q_mu, q_sq, r, r_mu, r_sq, taps, c1, c2)
    union = tf.maximum(q_mask, r_mask)
    masked = tf.reduce_sum(s * union, axis=(1, 2)) / tf.maximum(tf.reduce_sum(union, axis=(1, 2)), 1.0)
    return tf.reduce_mean(s, axis=(1, 2)), masked


def _ssim_map(q, q_mu, q_sq, r, r_mu, r_sq, taps, c1, c2):
    cov = _blur_channels(q * r, taps) - q_mu * r_mu
    var_q, var_r = q_sq - q_mu**2, r_sq - r_mu**2
    return ((2 * q_mu * r_mu + c1) * (2 * cov + c2)) / ((q_mu**2 + r_mu**2 + c1) * (var_q + var_r + c2))


def brain_masks(images, level: float = BRAIN_LEVEL) -> np.ndarray:
    """(N, H, W) bool: pixels brighter than ``level`` with their holes (ventricles, sulci)
    filled. Real slices have an exactly black background, so this is the head's outline."""
    from scipy import ndimage

    arr = as_images(images, "images")[..., 0]
    return np.stack([ndimage.binary_fill_holes(a > level) for a in arr]) if len(arr) else arr.astype(bool)


def ssim_matrix(queries, references, block: int = 2 ** 21, reduce: str | None = None, masked: bool = False,
                masks=None):
    """SSIM of every query against every reference image, batched.

    Each image's local mean and second moment are blurred once; per pair only the
    product ``x * y`` is blurred, so a pair costs one blur instead of five. ``block``
    bounds the floats held at once (queries x references x pixels). With
    ``reduce="max"`` returns (best SSIM, index of the best reference) per query without
    keeping the full (Q, R) matrix; otherwise returns the matrix. Agrees with ``ssim``
    on each pair (tests/test_metrics.py).

    ``masked=True`` also averages each pair's SSIM map over the union of the two images'
    brain masks (``brain_masks``) only, so that black background, which any blank image
    matches perfectly, does not count; it then returns ``{"plain": ..., "masked": ...}``,
    each a matrix or a (best, index) pair, from one pass. ``masks``: the two sets' brain
    masks when the caller has them already.
    """
    q, r = _as_batch(queries, "queries"), _as_batch(references, "references")
    if q.shape[1:] != r.shape[1:]:
        raise BrainVQError(f"queries {q.shape[1:]} and references {r.shape[1:]} differ in size")
    c1 = tf.constant((SSIM_SETTINGS["k1"] * SSIM_SETTINGS["max_val"]) ** 2)
    c2 = tf.constant((SSIM_SETTINGS["k2"] * SSIM_SETTINGS["max_val"]) ** 2)
    taps = tf.constant(gaussian_taps())
    pixels = q.shape[1] * q.shape[2]
    step_r = max(1, min(len(r), block // pixels))
    step_q = max(1, min(len(q), block // (pixels * step_r)))
    kinds = ("plain", "masked") if masked else ("plain",)
    if masked:
        crop = SSIM_SETTINGS["filter_size"] // 2
        q_masks, r_masks = masks if masks is not None else (brain_masks(q), brain_masks(r))
        q_masks = np.asarray(q_masks)[:, crop:-crop, crop:-crop, None].astype(np.float32)
        r_masks = np.asarray(r_masks)[:, crop:-crop, crop:-crop].astype(np.float32)
    best = {k: np.full(len(q), -np.inf, np.float32) for k in kinds}
    where = {k: np.zeros(len(q), np.int64) for k in kinds}
    out = None if reduce == "max" else {k: np.zeros((len(q), len(r)), np.float32) for k in kinds}
    for j in range(0, len(r), step_r):
        r_part = tf.transpose(tf.constant(r[j:j + step_r, ..., 0]), (1, 2, 0))[None]   # (1, H, W, Rb)
        r_mu, r_sq = _blur_channels(r_part, taps), _blur_channels(r_part * r_part, taps)
        if masked:
            r_mask = tf.transpose(tf.constant(r_masks[j:j + step_r]), (1, 2, 0))[None]
        for i in range(0, len(q), step_q):
            q_part = tf.constant(q[i:i + step_q])
            q_mu, q_sq = _blur_channels(q_part, taps), _blur_channels(q_part * q_part, taps)
            if masked:
                parts = _ssim_block_masked(q_part, q_mu, q_sq, r_part, r_mu, r_sq,
                                           tf.constant(q_masks[i:i + step_q]), r_mask, taps, c1, c2)
            else:
                parts = (_ssim_block(q_part, q_mu, q_sq, r_part, r_mu, r_sq, taps, c1, c2),)
            for kind, part in zip(kinds, parts):
                part = part.numpy()
                if out is not None:
                    out[kind][i:i + step_q, j:j + step_r] = part
                    continue
                arg = part.argmax(axis=1)
                val = part[np.arange(len(part)), arg]
                better = val > best[kind][i:i + step_q]
                best[kind][i:i + step_q][better] = val[better]
                where[kind][i:i + step_q][better] = arg[better] + j
    result = {k: (best[k], where[k]) for k in kinds} if reduce == "max" else out
    return result if masked else result["plain"]


def nearest_neighbour_ssim(queries, references, masked: bool = False, candidates: int | None = None, **kw):
    """Each query's highest SSIM against every reference, and that reference's index
    (with ``masked=True``: a dict of such pairs, ``"plain"`` and ``"masked"``).

    ``candidates=None`` compares every pair (the reference path). ``candidates=M`` first
    ranks the references of each query by the distance between 4x-smaller copies (a
    matrix product) and computes SSIM for its M nearest only: the best SSIM is then that
    of the best of those M, never more than the exhaustive one, and equal to it whenever
    the nearest slice by SSIM is among them. On the demo's 128x128 slices, against 2,560
    training slices, M = 128 found the exhaustive best for 98% of real test slices by the
    whole-image score (mean shortfall 1e-5) and for 95% inside the masks (mean shortfall
    0.001, at most 0.04), at a twentieth of the work (tests/test_metrics.py checks it).
    """
    if candidates is not None and int(candidates) < 1:
        raise BrainVQError(f"candidates={candidates} must be a positive number of references, or None for all")
    if hasattr(references, "chunks"):
        return _streamed_nearest(_as_batch(queries, "queries"), references, masked, candidates, kw)
    q, r = _as_batch(queries, "queries"), _as_batch(references, "references")
    if candidates is None or int(candidates) >= len(r):
        return ssim_matrix(q, r, reduce="max", masked=masked, **kw)
    if q.shape[1:] != r.shape[1:]:
        raise BrainVQError(f"queries {q.shape[1:]} and references {r.shape[1:]} differ in size")
    nearest = proxy_candidates(q, r, int(candidates))
    masks = (brain_masks(q), brain_masks(r)) if masked else None
    kinds = ("plain", "masked") if masked else ("plain",)
    best = {k: np.zeros(len(q), np.float32) for k in kinds}
    where = {k: np.zeros(len(q), np.int64) for k in kinds}
    with Bar(len(q), "nearest neighbours", "image", show=False) as bar:
        for i, idx in enumerate(nearest):
            pair_masks = (masks[0][i:i + 1], masks[1][idx]) if masked else None
            m = ssim_matrix(q[i:i + 1], r[idx], masked=masked, masks=pair_masks, **kw)
            for kind in kinds:
                row = (m[kind] if masked else m)[0]
                best[kind][i], where[kind][i] = row.max(), idx[row.argmax()]
            bar.update(1)
    result = {k: (best[k], where[k]) for k in kinds}
    return result if masked else result["plain"]


def _small(x, factor: int = 4) -> np.ndarray:
    """(N, h*w) float64 copies of (N, H, W, 1) images averaged over ``factor`` x ``factor`` blocks."""
    n, h, w = x.shape[0], x.shape[1] // factor * factor, x.shape[2] // factor * factor
    x = np.asarray(x)[:, :h, :w, 0].reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return x.reshape(n, -1).astype(np.float64)


def _proxy_distances(qs, rs) -> np.ndarray:
    return (qs**2).sum(1)[:, None] - 2 * qs @ rs.T + (rs**2).sum(1)[None]


def proxy_candidates(queries, references, m: int, factor: int = 4) -> np.ndarray:
    """(Q, m) indices of each query's m nearest references by Euclidean distance between
    copies averaged over ``factor`` x ``factor`` blocks."""
    dist = _proxy_distances(_small(queries, factor), _small(references, factor))
    return np.argsort(dist, axis=1, kind="stable")[:, :m]


def _streamed_nearest(q, references, masked, candidates, kw):
    """``nearest_neighbour_ssim`` against references read a chunk at a time (``references.chunks()``
    yields ``(start, images)``, e.g. ``data.LazyImages``): the exhaustive search keeps a running
    best per query; the candidate search reads the references twice, once to keep each query's
    ``candidates`` nearest by the coarse distance, once to score those exactly. Memory: one chunk
    of references, and Q x candidates indices. Same results as with the whole array in memory
    (tests/test_metrics.py)."""
    kinds = ("plain", "masked") if masked else ("plain",)
    q_masks = brain_masks(q) if masked else None
    best = {k: np.full(len(q), -np.inf, np.float32) for k in kinds}
    where = {k: np.zeros(len(q), np.int64) for k in kinds}

    def update(kind, i, values, indices):
        arg = int(np.argmax(values))
        if values[arg] > best[kind][i]:
            best[kind][i], where[kind][i] = values[arg], indices[arg]

    def check(chunk):
        if chunk.shape[1:] != q.shape[1:]:
            raise BrainVQError(f"queries {q.shape[1:]} and references {chunk.shape[1:]} differ in size")

    m = None if candidates is None or int(candidates) >= len(references) else int(candidates)
    if m is None:                     # exhaustive, a chunk at a time
        for start, chunk in references.chunks():
            check(chunk)
            masks = (q_masks, brain_masks(chunk)) if masked else None
            res = ssim_matrix(q, chunk, reduce="max", masked=masked, masks=masks, **kw)
            res = res if masked else {"plain": res}
            for kind in kinds:
                better = res[kind][0] > best[kind]
                best[kind][better], where[kind][better] = res[kind][0][better], res[kind][1][better] + start
    else:
        qs = _small(q)
        top_d, top_i = np.zeros((len(q), 0)), np.zeros((len(q), 0), np.int64)
        for start, chunk in references.chunks():       # pass 1: each query's m nearest by the coarse distance
            check(chunk)
            d = np.concatenate([top_d, _proxy_distances(qs, _small(chunk))], axis=1)
            i = np.concatenate([top_i, np.broadcast_to(np.arange(start, start + len(chunk)), (len(q), len(chunk)))],
                               axis=1)
            keep = np.argsort(d, axis=1, kind="stable")[:, :m]
            top_d, top_i = np.take_along_axis(d, keep, 1), np.take_along_axis(i, keep, 1)
        with Bar(len(references), "nearest neighbours (exact)", "reference", show=False) as bar:
            for start, chunk in references.chunks():   # pass 2: SSIM against those m
                inside = (top_i >= start) & (top_i < start + len(chunk))
                c_masks = brain_masks(chunk) if masked else None
                for i in np.flatnonzero(inside.any(axis=1)):
                    idx = np.sort(top_i[i][inside[i]]) - start
                    masks = (q_masks[i:i + 1], c_masks[idx]) if masked else None
                    res = ssim_matrix(q[i:i + 1], chunk[idx], masked=masked, masks=masks, **kw)
                    res = res if masked else {"plain": res}
                    for kind in kinds:
                        update(kind, i, res[kind][0], idx + start)
                bar.update(len(chunk))
    result = {k: (best[k], where[k]) for k in kinds}
    return result if masked else result["plain"]


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
