"""The realism scores can fail: a blur, a blank image and noise are caught; real slices of other
subjects pass; bad input gets a one-line error."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from brainvq_utils import generation, realism  # noqa: E402
from brainvq_utils.errors import BrainVQError  # noqa: E402
from brainvq_utils.synthetic import render_subject  # noqa: E402

SIZE, SLICES = 64, 8


@pytest.fixture(scope="module")
def cohort():
    """Two groups of 12 synthetic subjects, 8 slices each (positions 0..7 of 8 levels)."""
    def group(first):
        ids = range(first, first + 12)
        images = np.concatenate([render_subject(i, seed=3, size=SIZE, slices=SLICES)[..., None] for i in ids])
        groups = np.repeat([f"case_{i:03d}" for i in ids], SLICES)
        return realism.quantize_8bit(images), groups, np.tile(np.arange(SLICES), 12)
    return group(0), group(12)


def test_auc_counts_pairs_and_ties():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.5, 0.7, 0.2])
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert realism.auc(labels, scores) == pytest.approx(expected)
    assert realism.auc([0, 1], [0.2, 0.9]) == 1.0 and realism.auc([0, 1], [0.9, 0.2]) == 0.0
    with pytest.raises(BrainVQError, match="both sets"):
        realism.auc([1, 1], [0.2, 0.3])


def test_quantize_8bit_puts_values_on_the_grey_levels():
    x = np.array([[-0.2, 0.0, 0.5, 0.70001, 1.3]], np.float32)
    q = realism.quantize_8bit(x)
    np.testing.assert_allclose(q * 255, np.round(q * 255), atol=1e-4)
    assert q.min() == 0.0 and q.max() == 1.0 and abs(q[0, 2] - 128 / 255) < 1e-6
    with pytest.raises(BrainVQError, match="NaN"):
        realism.quantize_8bit(np.array([np.nan]))


def test_real_slices_of_other_subjects_pass_the_control(cohort):
    (a, ga, _), (b, gb, _) = cohort
    result = realism.two_sample_test(a, b, ga, gb)
    assert 0.25 < result["auc"] < 0.75, result["auc"]
    assert result["auc_low"] <= result["auc"] <= result["auc_high"]
    assert result["scores"].shape == (len(a) + len(b),) and result["folds"] == realism.FOLDS


def test_a_slight_blur_is_caught(cohort):
    """A set that differs from real slices only by a 0.6-pixel Gaussian blur."""
    (a, ga, _), (b, gb, _) = cohort
    blurred = np.stack([gaussian_filter(x[..., 0], 0.6)[..., None] for x in b])
    result = realism.two_sample_test(a, blurred, ga, np.asarray([f"blur-{g}" for g in gb]))
    control = realism.two_sample_test(a, b, ga, gb)
    assert result["auc"] > 0.9 and result["auc"] > control["auc"] + 0.25, (result["auc"], control["auc"])
    assert result["accuracy"] > 0.8


def test_noise_and_blank_images_are_caught(cohort):
    (a, ga, _), _ = cohort
    rng = np.random.default_rng(0)
    noise = (rng.uniform(size=a.shape) * (a > 0.1)).astype("float32")     # brain-shaped noise
    groups = np.asarray([f"fake-{i // SLICES}" for i in range(len(a))])
    assert realism.two_sample_test(a, noise, ga, groups)["auc"] > 0.95
    blank = np.zeros_like(a)
    assert realism.two_sample_test(a, blank, ga, groups)["auc"] > 0.95


@pytest.mark.parametrize("case,match", [
    ("sizes", "different sizes"),
    ("few", "fewer than the 5 folds"),
    ("names", "one subject name per image"),
    ("folds", "at least 2 folds"),
])
def test_bad_two_sample_input_is_refused(cohort, case, match):
    (a, ga, _), (b, gb, _) = cohort
    kwargs = {}
    if case == "sizes":
        b = b[:, :32, :32]
    elif case == "few":
        b, gb = b[:3], gb[:3]
    elif case == "names":
        gb = gb[:-1]
    else:
        kwargs["folds"] = 1
    with pytest.raises(BrainVQError, match=match):
        realism.two_sample_test(a, b, ga, gb, **kwargs)


def test_realism_scores_runs_every_comparison_and_checks_sets(cohort):
    (a, ga, _), (b, gb, _) = cohort
    rng = np.random.default_rng(1)
    noisy = realism.quantize_8bit(np.clip(b + rng.normal(0, 0.05, b.shape) * (b > 0), 0, 1))
    sets = {"real": (a, ga), "real_other": (b, gb), "reconstructions": (b, gb), "samples": (noisy, gb),
            "random": (rng.uniform(size=b.shape).astype("float32"), gb)}
    section, details = realism.realism_scores(sets, log=lambda *_: None)
    for name in realism.COMPARISONS:
        assert 0.0 <= section[f"realism_auc_{name}"] <= 1.0 and name in details
    assert section["realism_auc_random"] > 0.95 and section["realism_auc_reconstructions_vs_samples"] > 0.9
    assert section["realism_auc_control"] < 0.75
    with pytest.raises(BrainVQError, match="needs the set 'samples'"):
        realism.realism_scores({k: v for k, v in sets.items() if k != "samples"}, log=lambda *_: None)
    with pytest.raises(BrainVQError, match="different sizes"):
        realism.realism_scores({**sets, "samples": (noisy[:, :32, :32], gb)}, log=lambda *_: None)


def test_precision_and_recall_separate_real_from_noise(cohort):
    (a, _, _), (b, _, _) = cohort
    space = realism.FeatureSpace(a, dims=16)
    fa, fb = realism.texture_features(a), realism.texture_features(b)
    noise = realism.texture_features(np.random.default_rng(2).uniform(size=b.shape) * (b > 0.1))
    scores = realism.precision_recall_scores(space, fa, {"real": fb, "noise": noise})
    assert scores["real"][0] > 0.7 and scores["real"][1] > 0.7, scores
    assert scores["noise"][0] < 0.1 and scores["noise"][1] < 0.1, scores


def test_precision_recall_on_point_clouds():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 2))
    assert realism.precision_recall(real, rng.normal(size=(300, 2))) > (0.85, 0.85)
    collapsed = rng.normal(scale=0.05, size=(300, 2))           # realistic, but no variety
    precision, recall = realism.precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.3
    far = rng.normal(size=(300, 2)) + 20
    assert realism.precision_recall(real, far) == (0.0, 0.0)
    with pytest.raises(BrainVQError, match="more than k=3"):
        realism.coverage(real[:3], far)


def test_empty_images_are_found():
    rng = np.random.default_rng(4)
    brain = render_subject(0, seed=0, size=SIZE, slices=SLICES)[..., None]
    speck = np.zeros((1, SIZE, SIZE, 1), np.float32)
    speck[0, 30:32, 30:32] = 0.8
    images = np.concatenate([brain, np.zeros((1, SIZE, SIZE, 1)), speck, rng.uniform(0, 0.05, (1, SIZE, SIZE, 1))])
    empty = realism.empty_images(images)
    assert not empty[:SLICES].any() and empty[SLICES:].all()


def test_per_position_fidelity_compares_like_with_like(cohort):
    (a, _, pa), (b, _, pb) = cohort
    same = realism.per_position_fidelity(a[:16], pa[:16], a, pa)
    np.testing.assert_allclose(same, 1.0, atol=1e-4)                # each finds itself
    other = realism.per_position_fidelity(b[:16], pb[:16], a, pa)
    assert (other < 0.99).all() and (other > 0.2).all()
    shifted = realism.per_position_fidelity(b[:16], (pb[:16] + 4) % SLICES, a, pa)
    assert shifted.mean() < other.mean()                            # asked for the wrong level
    assert np.isnan(realism.per_position_fidelity(b[:1], [99], a, pa)).all()


def test_generation_scores_never_count_a_blank_sample_as_good_or_memorised(cohort):
    (a, _, _), (b, _, _) = cohort
    blank = np.zeros((8, SIZE, SIZE, 1), np.float32)
    rng = np.random.default_rng(5)
    noise = rng.uniform(size=(8, SIZE, SIZE, 1)).astype("float32")
    section, arrays = generation.generation_scores(blank, a, b, noise, 1.0, candidates=None)
    assert section["empty_fraction"] == 1.0
    assert section["nn_ssim_frac_above_0_6"] == 0.0 and section["memorised_fraction"] == 0.0
    assert arrays["nn_ssim"].max() > 0.6          # the whole-image score alone would have passed some
    good, _ = generation.generation_scores(b[:16], a, b, noise, 1.0, candidates=None)
    assert good["empty_fraction"] == 0.0 and good["nn_ssim_frac_above_0_6"] > 0.5
