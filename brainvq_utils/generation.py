"""Generation scores: how good, how new and how varied the sampled slices are.

Per DESIGN.md, each score is printed beside two baselines scored the same way: real
test slices (the ceiling) and decoded uniform random code maps (the floor).

- nearest-neighbour SSIM of an image: its highest SSIM against every training image, over
  the whole image (the original reports' score) and inside the brain masks of the pair
  (``masked``), where black background, which a blank image matches perfectly, does not count;
- empty: an image with almost no brain (``realism.empty_images``); it never counts as good
  or as memorised, and the means are over the images that are not empty;
- memorised: a sample whose masked nearest-neighbour SSIM exceeds the 99th percentile of the
  same score for real test slices (closer to a training slice than real unseen slices get);
- diversity: mean SSIM over pairs of samples, beside the same for pairs of real test slices.
"""

from __future__ import annotations

import numpy as np

from . import metrics
from .images import as_images
from .realism import empty_images


def floor_to_ceiling(value: float, floor: float, ceiling: float) -> float:
    """Where ``value`` lies between the floor (0) and the ceiling (1)."""
    span = ceiling - floor
    return float((value - floor) / span) if span > 0 else float("nan")


NN_CANDIDATES = 128   # references scored exactly per query (metrics.nearest_neighbour_ssim)


def _scored(sets, train_images, candidates) -> list[dict]:
    """Nearest-neighbour scores of each set of images, all in one search (``train_images`` may be
    ``data.LazyImages``: then it is read twice in all, not twice per set)."""
    sets = [as_images(x, name) for x, name in zip(sets, ("samples", "test_images", "random_images"))]
    nn = metrics.nearest_neighbour_ssim(np.concatenate(sets), train_images, masked=True, candidates=candidates)
    out, start = [], 0
    for images in sets:
        part = slice(start, start + len(images))
        start += len(images)
        out.append({"plain": nn["plain"][0][part], "index": nn["plain"][1][part], "masked": nn["masked"][0][part],
                    "masked_index": nn["masked"][1][part], "empty": empty_images(images)})
    return out


def _mean_of_filled(values, empty) -> float:
    return float(values[~empty].mean()) if (~empty).any() else float("nan")


def generation_scores(samples, train_images, test_images, random_images, sampling_seconds: float,
                      max_pairs_images: int = 400, candidates: int | None = NN_CANDIDATES) -> dict:
    """The ``generation`` section of metrics.json, plus the per-image arrays for plots.

    ``samples``, ``test_images`` and ``random_images`` (decoded uniform random codes) are
    each scored against every image of ``train_images`` (an array, or ``data.LazyImages``), over the whole image and inside
    the brain masks, in one pass; each against its ``candidates`` nearest training images by
    a coarse distance (None: against all; see ``metrics.nearest_neighbour_ssim``).
    """
    s, real, rnd = _scored([samples, test_images, random_images], train_images, candidates)
    threshold = float(np.percentile(real["masked"][~real["empty"]], 99)) if (~real["empty"]).any() else 1.0
    section = {
        "n_samples": int(len(samples)),
        "nn_ssim_mean": _mean_of_filled(s["plain"], s["empty"]),
        "nn_ssim_median": float(np.median(s["plain"][~s["empty"]])) if (~s["empty"]).any() else float("nan"),
        "nn_ssim_frac_above_0_6": float(((s["plain"] > 0.6) & ~s["empty"]).mean()),
        "nn_ssim_masked_mean": _mean_of_filled(s["masked"], s["empty"]),
        "nn_ssim_masked_frac_above_0_6": float(((s["masked"] > 0.6) & ~s["empty"]).mean()),
        "empty_fraction": float(s["empty"].mean()),
        "memorised_fraction": float(((s["masked"] > threshold) & ~s["empty"]).mean()),
        "memorised_threshold": threshold,
        "diversity_ssim_mean": metrics.mean_pairwise_ssim(samples, max_pairs_images),
        "real_diversity_ssim_mean": metrics.mean_pairwise_ssim(test_images, max_pairs_images),
        "real_nn_ssim_mean": _mean_of_filled(real["plain"], real["empty"]),
        "real_nn_ssim_masked_mean": _mean_of_filled(real["masked"], real["empty"]),
        "real_nn_ssim_masked_frac_above_0_6": float(((real["masked"] > 0.6) & ~real["empty"]).mean()),
        "real_empty_fraction": float(real["empty"].mean()),
        "random_codes_nn_ssim_mean": _mean_of_filled(rnd["plain"], rnd["empty"]),
        "random_codes_nn_ssim_masked_mean": _mean_of_filled(rnd["masked"], rnd["empty"]),
        "random_codes_empty_fraction": float(rnd["empty"].mean()),
        "sampling_seconds": float(sampling_seconds),
        "nn_candidates": None if candidates is None else int(candidates),
    }
    section["floor_to_ceiling"] = floor_to_ceiling(section["nn_ssim_mean"], section["random_codes_nn_ssim_mean"],
                                                   section["real_nn_ssim_mean"])
    arrays = {"nn_ssim": s["plain"], "nn_index": s["index"], "nn_ssim_masked": s["masked"],
              "nn_masked_index": s["masked_index"], "empty": s["empty"],
              "real_nn_ssim": real["plain"], "real_nn_ssim_masked": real["masked"], "real_empty": real["empty"],
              "random_nn_ssim": rnd["plain"], "random_nn_ssim_masked": rnd["masked"], "random_empty": rnd["empty"]}
    return section, arrays
