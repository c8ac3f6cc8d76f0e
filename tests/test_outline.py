"""The outline score (brainvq_utils.outline): it passes real slices of other people at their own level,
and flags what goes wrong in generated ones: half a brain, a sliver, a brain shifted off its place,
a slice asked for at the wrong level, noise."""

import numpy as np
import pytest

from brainvq_utils import outline
from brainvq_utils.synthetic import render_subject

SIZE, SLICES = 64, 8


@pytest.fixture(scope="module")
def slices():
    """Two groups of synthetic subjects, 8 slices each (levels 0..7): one to learn the band from,
    one held out."""
    def group(ids):
        images = np.concatenate([render_subject(i, seed=3, size=SIZE, slices=SLICES)[..., None] for i in ids])
        return images, np.tile(np.arange(SLICES), len(ids))
    held = list(range(5, 60, 6))                       # every sixth of 60 subjects is held out
    return group([i for i in range(60) if i not in held]), group(held)


def test_stats_measure_area_centroid_and_pieces():
    img = np.zeros((1, 40, 40, 1), np.float32)
    img[0, 4:12, 4:12] = 0.8            # one square top left
    img[0, 30:36, 30:36] = 0.8          # and one bottom right
    area, row, col, pieces = outline.outline_stats(img)[0]
    assert area == pytest.approx((64 + 36) / 1600) and pieces == 2
    assert row == pytest.approx(col) and 0.3 < row < 0.6
    assert outline.outline_stats(np.zeros((1, 40, 40, 1)))[0].tolist() == [0.0, 0.5, 0.5, 0.0]


def test_real_slices_pass_and_broken_ones_are_flagged(slices):
    (train, train_levels), (held, held_levels) = slices
    band = outline.OutlineBand(train, train_levels)
    real = band.broken(held, held_levels)
    assert real.mean() <= 0.15, real.mean()                                 # held-out real slices: few flagged
    half = held.copy()
    half[:, :, SIZE // 2:] = 0                                               # the right half of every brain gone
    assert band.broken(half, held_levels).mean() >= 0.9
    sliver = held * (np.arange(SIZE)[None, :, None, None] < SIZE * 0.35)    # only the top third drawn
    assert band.broken(sliver, held_levels).mean() >= 0.9
    shifted = np.roll(held, SIZE // 4, axis=2)                               # the whole brain moved right
    assert band.broken(shifted, held_levels).mean() >= 0.8
    wrong_level = band.broken(held, (held_levels + 4) % SLICES)              # asked for another level
    assert wrong_level.mean() >= 2 * max(real.mean(), 0.1)
    noise = np.random.default_rng(0).uniform(0, 1, held.shape).astype(np.float32)
    assert band.broken(noise, held_levels).all()
    scores, flags = outline.outline_scores(band, {"samples": (half, held_levels), "real": (held, held_levels)})
    assert scores["outline_broken_fraction"] >= 0.9 and scores["real_outline_broken_fraction"] == real.mean()


def test_the_band_reads_lazy_references_as_arrays(slices, tmp_path):
    (train, levels), (held, held_levels) = slices

    class Lazy:                                         # what data.LazyImages offers
        def __len__(self):
            return len(train)

        def chunks(self):
            for start in range(0, len(train), 50):
                yield start, train[start:start + 50]

    a = outline.OutlineBand(train, levels)
    b = outline.OutlineBand(Lazy(), levels)
    np.testing.assert_array_equal(a.broken(held, held_levels), b.broken(held, held_levels))
