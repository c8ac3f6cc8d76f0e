"""Tests of brainvq_utils.metrics: SSIM against scikit-image, PSNR, summaries, codebook stats."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

from brainvq_utils import metrics  # noqa: E402
from brainvq_utils.errors import BrainVQError  # noqa: E402
from brainvq_utils.synthetic import render_subject  # noqa: E402

TOL = 1e-3


def sk_ssim(a, b) -> float:
    return structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0)


def rescale(x):
    x = x - x.min()
    return (x / max(x.max(), 1e-12)).astype(np.float32)


def compare_pairs(pairs):
    """SSIM of every pair with metrics.ssim (batched per shape) and with skimage.

    Returns (ours, reference, labels) as arrays/lists in the order of ``pairs``."""
    ours = np.empty(len(pairs))
    by_shape = {}
    for i, (a, b, _) in enumerate(pairs):
        by_shape.setdefault(a.shape, []).append(i)
    for idx in by_shape.values():
        a = np.stack([pairs[i][0] for i in idx])[..., None]
        b = np.stack([pairs[i][1] for i in idx])[..., None]
        got = metrics.ssim(a, b)
        assert got.shape == (len(idx),)
        ours[idx] = got
    ref = np.array([sk_ssim(a, b) for a, b, _ in pairs])
    return ours, ref, [label for _, _, label in pairs]


def assert_agree(ours, ref, labels, min_pairs):
    assert len(ours) >= min_pairs
    assert np.all(np.isfinite(ours))
    diff = np.abs(ours - ref)
    worst = int(np.argmax(diff))
    assert diff.max() < TOL, (f"max |metrics.ssim - skimage| = {diff.max():.2e} over {len(ours)} pairs "
                              f"(worst: {labels[worst]}: ours {ours[worst]:.6f}, skimage {ref[worst]:.6f})")


# ----------------------------------------------------------------------------- SSIM vs skimage
def random_pairs():
    rng = np.random.default_rng(1234)
    shapes = [(32, 32), (64, 64), (128, 128), (48, 80)]
    pairs = []
    for shape in shapes:
        for rep in range(4):
            a = rng.random(shape, dtype=np.float32)
            b = rng.random(shape, dtype=np.float32)
            pairs.append((a, b, f"uniform {shape} #{rep}"))
            # Correlated: a plus noise, so SSIM is far from 0 as well.
            c = np.clip(a + rng.normal(0, 0.1 + 0.1 * rep, shape), 0, 1).astype(np.float32)
            pairs.append((a, c, f"uniform+noise {shape} #{rep}"))
        for rep in range(4):
            s = rng.uniform(1.0, 4.0)
            a = rescale(gaussian_filter(rng.standard_normal(shape), s))
            b = rescale(gaussian_filter(rng.standard_normal(shape), s))
            pairs.append((a, b, f"smooth sigma={s:.1f} {shape} #{rep}"))
            c = rescale(a + gaussian_filter(rng.standard_normal(shape), s) * (0.2 + 0.2 * rep))
            pairs.append((a, c, f"smooth correlated {shape} #{rep}"))
    return pairs


def test_ssim_matches_skimage_on_random_pairs():
    pairs = random_pairs()
    assert {p[0].shape for p in pairs} == {(32, 32), (64, 64), (128, 128), (48, 80)}
    ours, ref, labels = compare_pairs(pairs)
    assert_agree(ours, ref, labels, min_pairs=50)
    # The pairs span a real range of SSIM values, so agreement is not trivial.
    assert ref.min() < 0.1 and ref.max() > 0.6


@pytest.fixture(scope="module")
def brains():
    """Rendered slices: {size: {subject: (slices, size, size)}}."""
    return {64: {i: render_subject(i, seed=0, size=64, slices=6) for i in range(3)},
            128: {i: render_subject(i, seed=0, size=128, slices=4) for i in range(2)}}


def brain_pairs(brains):
    rng = np.random.default_rng(7)
    pairs = []
    for size, subjects in brains.items():
        ids = sorted(subjects)
        for s in ids:
            vol = subjects[s]
            other = subjects[ids[(ids.index(s) + 1) % len(ids)]]
            for k in range(1, len(vol) - 1):   # skip the extreme slices
                x = vol[k]
                noisy = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
                blurred = gaussian_filter(x, 1.2).astype(np.float32)
                pairs += [(x, noisy, f"{size}px subject {s} slice {k} vs noisy"),
                          (x, blurred, f"{size}px subject {s} slice {k} vs blurred"),
                          (x, other[k], f"{size}px subject {s} slice {k} vs another subject")]
    return pairs


def test_ssim_matches_skimage_on_brain_slices(brains):
    for subjects in brains.values():
        for vol in subjects.values():
            assert vol.dtype == np.float32 and vol.min() >= 0 and vol.max() <= 1
            assert (vol > 0).mean() > 0.1   # there is brain in these slices
    pairs = brain_pairs(brains)
    ours, ref, labels = compare_pairs(pairs)
    assert_agree(ours, ref, labels, min_pairs=30)
    assert ref.min() < 0.9   # the degradations do lower SSIM


def test_ssim_drops_with_more_noise(brains):
    x = brains[64][0][2]
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, x.shape)
    scores = [metrics.ssim(x, np.clip(x + s * noise, 0, 1))[0] for s in (0.01, 0.05, 0.2)]
    assert scores[0] > scores[1] > scores[2], scores


# ----------------------------------------------------------------------------- SSIM properties
def test_ssim_of_image_with_itself_is_one():
    rng = np.random.default_rng(3)
    imgs = [rng.random((64, 64), dtype=np.float32),
            rescale(gaussian_filter(rng.standard_normal((48, 80)), 2.0)),
            np.zeros((32, 32), np.float32)]
    for img in imgs:
        assert abs(metrics.ssim(img, img)[0] - 1.0) < 1e-6
    batch = rng.random((5, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(metrics.ssim(batch, batch), np.ones(5), atol=1e-6)


def test_ssim_is_symmetric_and_per_image():
    rng = np.random.default_rng(4)
    a = rng.random((6, 40, 40, 1), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    ab, ba = metrics.ssim(a, b), metrics.ssim(b, a)
    assert ab.shape == (6,)
    np.testing.assert_allclose(ab, ba, atol=1e-6)
    # Batching (also across batch_size chunks) does not change per-image values.
    single = np.array([metrics.ssim(a[i], b[i])[0] for i in range(6)])
    np.testing.assert_allclose(metrics.ssim(a, b, batch_size=4), single, atol=1e-6)
    assert np.all(ab < 1.0)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((64, 64), (64, 32)),                 # shape mismatch
    ((2, 32, 32, 1), (3, 32, 32, 1)),     # batch mismatch
    ((10, 10), (10, 10)),                 # smaller than the 11x11 window
    ((1, 32, 8, 1), (1, 32, 8, 1)),       # one side too small
    ((1, 32, 32, 3), (1, 32, 32, 3)),     # colour channels
    ((2, 1, 32, 32, 1), (2, 1, 32, 32, 1)),
])
def test_ssim_rejects_bad_shapes(a_shape, b_shape):
    with pytest.raises(BrainVQError):
        metrics.ssim(np.zeros(a_shape, np.float32), np.zeros(b_shape, np.float32))


def test_ssim_accepts_smallest_window():
    a = np.random.default_rng(0).random((11, 11), dtype=np.float32)
    assert metrics.ssim(a, a).shape == (1,)


# ----------------------------------------------------------------------------- PSNR
def test_psnr_identical_is_inf():
    a = np.random.default_rng(5).random((3, 32, 32, 1), dtype=np.float32)
    out = metrics.psnr(a, a)
    assert out.shape == (3,) and np.all(np.isposinf(out))


def test_psnr_known_values():
    a = np.full((32, 32), 0.3, np.float32)
    assert metrics.psnr(a, a + 0.1)[0] == pytest.approx(20.0, abs=1e-3)     # MSE 0.01
    assert metrics.psnr(a, a - 0.01)[0] == pytest.approx(40.0, abs=1e-2)    # MSE 1e-4
    # Half the pixels off by 0.2: MSE 0.02 -> 10 log10(50) dB; per image in a batch.
    b = a.copy()
    b[:, :16] += 0.2
    out = metrics.psnr(np.stack([a, a])[..., None], np.stack([b, a + 0.1])[..., None])
    np.testing.assert_allclose(out, [10 * np.log10(50.0), 20.0], atol=1e-3)


def test_psnr_rejects_shape_mismatch():
    with pytest.raises(BrainVQError):
        metrics.psnr(np.zeros((1, 32, 32, 1)), np.full((2, 32, 32, 1), 0.1))
    with pytest.raises(BrainVQError):
        metrics.psnr(np.zeros((32, 32)), np.zeros((32, 16)))


# ----------------------------------------------------------------------------- summarize
def test_summarize_matches_numpy():
    values = np.random.default_rng(6).normal(0.7, 0.1, 257)
    out = metrics.summarize(values, prefix="ssim_")
    assert set(out) == {"ssim_mean", "ssim_median", "ssim_p05"}
    assert out["ssim_mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert out["ssim_median"] == pytest.approx(np.median(values), abs=1e-12)
    assert out["ssim_p05"] == pytest.approx(np.percentile(values, 5), abs=1e-12)
    assert all(type(v) is float for v in out.values())
    plain = metrics.summarize([1.0, 2.0, 3.0, 10.0])
    assert plain == {"mean": 4.0, "median": 2.5, "p05": pytest.approx(np.percentile([1, 2, 3, 10], 5))}


@pytest.mark.parametrize("empty", [[], np.zeros(0)])
def test_summarize_empty_raises(empty):
    with pytest.raises(BrainVQError, match="psnr_"):
        metrics.summarize(empty, prefix="psnr_")


# ----------------------------------------------------------------------------- codebook stats
@pytest.mark.parametrize("k", [1, 8, 256])
def test_codebook_uniform_use(k):
    out = metrics.codebook_stats(np.full(k, 5))
    assert out["used_fraction"] == pytest.approx(1.0)
    assert out["perplexity"] == pytest.approx(k, rel=1e-9)
    assert out["dead_codes"] == 0


def test_codebook_one_code():
    counts = np.zeros(64)
    counts[17] = 1000
    out = metrics.codebook_stats(counts)
    assert out["perplexity"] == pytest.approx(1.0)
    assert out["used_fraction"] == pytest.approx(1 / 64)
    assert out["dead_codes"] == 63


def test_codebook_all_zero():
    out = metrics.codebook_stats(np.zeros(32, int))
    assert out["used_fraction"] == 0.0
    assert out["dead_codes"] == 32


def test_codebook_partial_use_and_dead_codes():
    counts = np.array([10, 0, 10, 0, 10, 10, 0, 0, 0, 0])
    out = metrics.codebook_stats(counts)
    assert out["dead_codes"] == 6
    assert out["used_fraction"] == pytest.approx(0.4)
    assert out["perplexity"] == pytest.approx(4.0)
    skewed = metrics.codebook_stats([90, 5, 5, 0])
    p = np.array([0.9, 0.05, 0.05])
    assert skewed["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert 1.0 < skewed["perplexity"] < 3.0
    assert skewed["dead_codes"] == 1


def test_ssim_matrix_agrees_with_pairwise_ssim():
    from brainvq_utils.synthetic import render_subject
    rng = np.random.default_rng(11)
    refs = np.concatenate([render_subject(i, seed=5, size=64, slices=4)[..., None] for i in range(3)])
    queries = np.clip(refs[[1, 5, 9]] + rng.normal(0, 0.04, (3, 64, 64, 1)), 0, 1).astype("float32")
    queries = np.concatenate([queries, rng.uniform(size=(2, 64, 64, 1)).astype("float32")])
    fast = metrics.ssim_matrix(queries, refs, block=64 * 64 * 5)       # several reference blocks
    slow = np.array([[metrics.ssim(q[None], r[None])[0] for r in refs] for q in queries])
    np.testing.assert_allclose(fast, slow, atol=1e-4)
    best, where = metrics.nearest_neighbour_ssim(queries, refs, block=64 * 64 * 5)
    np.testing.assert_allclose(best, slow.max(axis=1), atol=1e-4)
    np.testing.assert_array_equal(where[:3], [1, 5, 9])   # a noisy copy finds its original


def test_mean_pairwise_ssim_orders_diversity():
    rng = np.random.default_rng(12)
    base = rng.uniform(size=(1, 32, 32, 1)).astype("float32")
    alike = np.clip(base + rng.normal(0, 0.02, (6, 32, 32, 1)), 0, 1).astype("float32")
    varied = rng.uniform(size=(6, 32, 32, 1)).astype("float32")
    assert metrics.mean_pairwise_ssim(alike) > 0.8 > metrics.mean_pairwise_ssim(varied)
    with pytest.raises(BrainVQError):
        metrics.mean_pairwise_ssim(varied[:1])


def masked_ssim_reference(a, b):
    """Per-pair reference: skimage's full SSIM map averaged over the union of the brain masks,
    on the part of the map where the 11x11 window fits (as ``ssim`` averages it)."""
    _, smap = structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=1.0, full=True)
    union = metrics.brain_masks(np.stack([a, b]))
    union = union[0] | union[1]
    return float(smap[5:-5, 5:-5][union[5:-5, 5:-5]].mean())


def test_masked_ssim_matrix_agrees_with_a_per_pair_reference():
    rng = np.random.default_rng(13)
    refs = np.concatenate([render_subject(i, seed=5, size=64, slices=4)[..., None] for i in range(2)])
    queries = np.clip(refs[[2, 6]] + rng.normal(0, 0.03, (2, 64, 64, 1)) * (refs[[2, 6]] > 0), 0, 1)
    queries = np.concatenate([queries, np.zeros((1, 64, 64, 1))]).astype("float32")
    out = metrics.ssim_matrix(queries, refs, block=64 * 64 * 3, masked=True)
    slow = np.array([[masked_ssim_reference(q[..., 0], r[..., 0]) for r in refs] for q in queries])
    np.testing.assert_allclose(out["masked"], slow, atol=2e-3)
    np.testing.assert_allclose(out["plain"], metrics.ssim_matrix(queries, refs), atol=2e-5)   # float32 round-off
    best = metrics.nearest_neighbour_ssim(queries, refs, masked=True, block=64 * 64 * 3)
    np.testing.assert_array_equal(best["masked"][1][:2], [2, 6])
    np.testing.assert_allclose(best["masked"][0], slow.max(axis=1), atol=2e-3)


def test_a_blank_image_matches_a_small_slice_outside_the_mask_only():
    """The issue's case: an all-black sample against a small vertex slice scored 0.875."""
    top = render_subject(0, seed=0, size=128, slices=32)[31][None, ..., None].astype("float32")
    blank = np.zeros_like(top)
    assert metrics.brain_masks(top).mean() < 0.25                   # a small slice: mostly background
    out = metrics.ssim_matrix(blank, top, masked=True)
    assert out["plain"][0, 0] > 0.6                                 # the whole-image score is fooled
    assert out["masked"][0, 0] < 0.2                                # inside the brain it is not
    same = metrics.ssim_matrix(top, top, masked=True)
    assert same["masked"][0, 0] == pytest.approx(1.0, abs=1e-4)


def test_brain_masks_fill_holes_and_ignore_background():
    img = np.zeros((1, 32, 32, 1), np.float32)
    img[0, 8:24, 8:24] = 0.8
    img[0, 14:18, 14:18] = 0.0                                      # a dark ventricle inside
    mask = metrics.brain_masks(img)
    assert mask.shape == (1, 32, 32) and mask[0, 8:24, 8:24].all() and mask.sum() == 16 * 16
    assert not metrics.brain_masks(np.zeros((2, 32, 32, 1))).any()


def test_candidate_search_finds_the_exhaustive_nearest_neighbour_on_brain_slices():
    rng = np.random.default_rng(14)
    refs = np.concatenate([render_subject(i, seed=6, size=64, slices=16)[..., None] for i in range(6)])
    queries = np.concatenate([render_subject(i, seed=6, size=64, slices=16)[..., None] for i in (7, 8)])
    queries = np.clip(queries + rng.normal(0, 0.02, queries.shape) * (queries > 0), 0, 1).astype("float32")
    exact = metrics.nearest_neighbour_ssim(queries, refs, masked=True)
    fast = metrics.nearest_neighbour_ssim(queries, refs, masked=True, candidates=16)
    more = metrics.nearest_neighbour_ssim(queries, refs, masked=True, candidates=32)
    for kind in ("plain", "masked"):
        for approx in (fast, more):
            assert (approx[kind][0] <= exact[kind][0] + 1e-5).all()       # never more than the exhaustive
        assert (fast[kind][1] == exact[kind][1]).mean() >= 0.9            # and almost always the same slice
        assert (more[kind][0] >= fast[kind][0] - 1e-5).all()              # more candidates, never worse
    np.testing.assert_allclose(fast["plain"][0], exact["plain"][0], atol=1e-5)
    # the masked score ranks neighbours less like the coarse distance does: a few misses, each small
    assert (exact["masked"][0] - fast["masked"][0]).mean() < 0.01
    assert metrics.nearest_neighbour_ssim(queries[:2], refs, candidates=len(refs))[0] == \
        pytest.approx(exact["plain"][0][:2], abs=1e-6)
    with pytest.raises(BrainVQError, match="candidates=0"):
        metrics.nearest_neighbour_ssim(queries, refs, candidates=0)


class Chunked:
    """References read a chunk at a time, as data.LazyImages serves them."""

    def __init__(self, images, size):
        self.images, self.size, self.reads = images, size, 0

    def __len__(self):
        return len(self.images)

    def chunks(self):
        for start in range(0, len(self.images), self.size):
            self.reads += 1
            yield start, self.images[start:start + self.size]


@pytest.mark.parametrize("candidates", [None, 16])
def test_streamed_references_give_what_the_whole_array_gives(candidates):
    rng = np.random.default_rng(3)
    refs = np.concatenate([render_subject(i, seed=2, size=64, slices=16)[..., None] for i in range(5)])
    queries = np.concatenate([render_subject(i, seed=2, size=64, slices=16)[..., None] for i in (6, 7)])[::3]
    queries = np.clip(queries + rng.normal(0, 0.02, queries.shape) * (queries > 0), 0, 1).astype("float32")
    whole = metrics.nearest_neighbour_ssim(queries, refs, masked=True, candidates=candidates)
    chunked = Chunked(refs, 23)                                        # chunks that do not divide 80
    streamed = metrics.nearest_neighbour_ssim(queries, chunked, masked=True, candidates=candidates)
    for kind in ("plain", "masked"):
        np.testing.assert_allclose(streamed[kind][0], whole[kind][0], atol=1e-6)
        np.testing.assert_array_equal(streamed[kind][1], whole[kind][1])
    assert chunked.reads == (4 if candidates is None else 8)           # one pass, or two
    plain = metrics.nearest_neighbour_ssim(queries, Chunked(refs, 7), candidates=candidates)
    np.testing.assert_allclose(plain[0], whole["plain"][0], atol=1e-6)
    with pytest.raises(BrainVQError, match="differ in size"):
        metrics.nearest_neighbour_ssim(queries[:, :32, :32], Chunked(refs, 23), candidates=candidates)
