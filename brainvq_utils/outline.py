"""The outline score: does a slice's brain have the extent, position and shape that real slices of its
level have?

Most of what goes wrong with generated slices is their global layout, not their texture: half a brain,
a brain that stops part-way down the image, a sliver at a high level, a fragment at a low one. Each
image's brain mask (``metrics.brain_masks``: pixels brighter than ``BRAIN_LEVEL``, holes filled) is
described by four numbers (``outline_stats``): its area (share of the image), the row and column of its
centroid (shares of the height and width), and its number of pieces (connected parts larger than
``MIN_PIECE`` of the image). ``OutlineBand`` learns, for each slice level, the band that real training
slices of that level span: the 1st to the 99th percentile of each number. An image whose numbers leave
its level's band is **broken**. Held-out real slices give the ceiling (a few are broken by chance: the
band holds 98% of the training slices in each number), decoded random codes the floor.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import BrainVQError
from .images import as_images
from .metrics import brain_masks

STATS = ("area", "centroid_row", "centroid_col", "pieces")
MIN_PIECE = 0.002      # a part of the mask smaller than this share of the image is a speck, not a piece
PERCENTILES = (1.0, 99.0)


def outline_stats(images) -> np.ndarray:
    """(N, 4): area, centroid row, centroid column (shares of the image) and number of pieces of each
    image's brain mask; an empty mask has area 0, its centroid at the centre and no pieces."""
    masks = brain_masks(as_images(images, "images"))
    n, h, w = masks.shape
    out = np.zeros((n, len(STATS)))
    rows, cols = np.arange(h)[:, None] / max(h - 1, 1), np.arange(w)[None, :] / max(w - 1, 1)
    for i, m in enumerate(masks):
        area = m.mean()
        labels, count = ndimage.label(m)
        sizes = np.bincount(labels.ravel())[1:] / m.size if count else np.zeros(0)
        out[i] = (area, (m * rows).sum() / m.sum() if area else 0.5, (m * cols).sum() / m.sum() if area else 0.5,
                  int((sizes >= MIN_PIECE).sum()))
    return out


class OutlineBand:
    """For each slice level, the band (1st to 99th percentile of each of ``STATS``) that real slices of
    that level span; ``broken`` says which images leave it. ``reference``: real training slices (an
    array, or ``data.LazyImages``, read a chunk at a time) and their levels."""

    def __init__(self, reference, levels, percentiles=PERCENTILES):
        levels = np.asarray(levels)
        if len(levels) != len(reference):
            raise BrainVQError(f"give one slice level per reference image: {len(reference)} images, {len(levels)} levels")
        if hasattr(reference, "chunks"):
            stats = np.concatenate([outline_stats(chunk) for _, chunk in reference.chunks()])
        else:
            stats = outline_stats(reference)
        self.bands = {}
        for level in np.unique(levels):
            part = stats[levels == level]
            self.bands[int(level)] = (np.percentile(part, percentiles[0], axis=0),
                                      np.percentile(part, percentiles[1], axis=0), len(part))
        if not self.bands:
            raise BrainVQError("the outline band needs real slices to learn from; got none")

    def outside(self, images, levels) -> np.ndarray:
        """(N, 4) bool: which of the four numbers of each image leave its level's band (a level the
        reference does not have takes the nearest level's band)."""
        stats = outline_stats(images)
        known = np.array(sorted(self.bands))
        out = np.zeros(stats.shape, bool)
        for i, level in enumerate(np.asarray(levels)):
            lo, hi, _ = self.bands[int(known[np.abs(known - level).argmin()])]
            out[i] = (stats[i] < lo) | (stats[i] > hi)
        return out

    def broken(self, images, levels) -> np.ndarray:
        """(N,) bool: images whose brain outline lies outside what real slices of their level span."""
        return self.outside(images, levels).any(axis=1)


def outline_scores(band: OutlineBand, sets: dict) -> tuple[dict, dict]:
    """The share of broken images in each named set ``{name: (images, levels)}``: the ``generation``
    keys ``outline_broken_fraction`` (``samples``), ``real_outline_broken_fraction`` (``real``) and
    ``random_outline_broken_fraction`` (``random``), and each set's per-image flags."""
    keys = {"samples": "outline_broken_fraction", "real": "real_outline_broken_fraction",
            "random": "random_outline_broken_fraction"}
    flags = {name: band.broken(images, levels) for name, (images, levels) in sets.items()}
    return {keys.get(name, f"{name}_outline_broken_fraction"): float(f.mean()) for name, f in flags.items()}, flags
