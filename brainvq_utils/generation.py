"""Generation scores: how good, how new and how varied the sampled slices are.

Per DESIGN.md, each score is printed beside two baselines scored the same way: real
test slices (the ceiling) and decoded uniform random code maps (the floor).

- nearest-neighbour SSIM of an image: its highest SSIM against every training image;
- memorised: a sample whose nearest-neighbour SSIM exceeds the 99th percentile of the
  same score for real test slices (closer to a training slice than real unseen slices get);
- diversity: mean SSIM over pairs of samples, beside the same for pairs of real test slices.
"""

from __future__ import annotations

import numpy as np

from . import metrics


def floor_to_ceiling(value: float, floor: float, ceiling: float) -> float:
    """Where ``value`` lies between the floor (0) and the ceiling (1)."""
    span = ceiling - floor
    return float((value - floor) / span) if span > 0 else float("nan")


def generation_scores(samples, train_images, test_images, random_images, sampling_seconds: float,
                      max_pairs_images: int = 400) -> dict:
    """The ``generation`` section of metrics.json, plus the per-image arrays for plots.

    ``samples``, ``test_images`` and ``random_images`` (decoded uniform random codes) are
    each scored against every image of ``train_images``.
    """
    nn, nn_index = metrics.nearest_neighbour_ssim(samples, train_images)
    real_nn, _ = metrics.nearest_neighbour_ssim(test_images, train_images)
    random_nn, _ = metrics.nearest_neighbour_ssim(random_images, train_images)
    threshold = float(np.percentile(real_nn, 99))
    section = {
        "n_samples": int(len(samples)),
        "nn_ssim_mean": float(nn.mean()),
        "nn_ssim_median": float(np.median(nn)),
        "nn_ssim_frac_above_0_6": float((nn > 0.6).mean()),
        "memorised_fraction": float((nn > threshold).mean()),
        "memorised_threshold": threshold,
        "diversity_ssim_mean": metrics.mean_pairwise_ssim(samples, max_pairs_images),
        "real_diversity_ssim_mean": metrics.mean_pairwise_ssim(test_images, max_pairs_images),
        "real_nn_ssim_mean": float(real_nn.mean()),
        "random_codes_nn_ssim_mean": float(random_nn.mean()),
        "sampling_seconds": float(sampling_seconds),
    }
    section["floor_to_ceiling"] = floor_to_ceiling(section["nn_ssim_mean"], section["random_codes_nn_ssim_mean"],
                                                   section["real_nn_ssim_mean"])
    arrays = {"nn_ssim": nn, "nn_index": nn_index, "real_nn_ssim": real_nn, "random_nn_ssim": random_nn}
    return section, arrays
