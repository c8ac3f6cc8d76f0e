"""Generation scores and the checks that guard notebooks 04-05."""

import numpy as np
import pytest

from brainvq_utils import generation, pipeline
from brainvq_utils.errors import BrainVQError
from brainvq_utils.priors import build_prior
from brainvq_utils.synthetic import render_subject
from brainvq_utils.vqvae import build_vqvae


def brains(subjects, seed=0):
    return np.concatenate([render_subject(i, seed=seed, size=32, slices=4)[..., None] for i in subjects])


def test_scores_separate_copies_new_brains_and_noise():
    train, test = brains(range(0, 6)), brains(range(6, 9))
    rng = np.random.default_rng(0)
    copies = np.clip(train[:8] + rng.normal(0, 0.01, train[:8].shape), 0, 1).astype("float32")
    noise = rng.uniform(size=(8, 32, 32, 1)).astype("float32")
    new = brains(range(9, 11))
    s_copy, a_copy = generation.generation_scores(copies, train, test, noise, 1.0)
    s_new, _ = generation.generation_scores(new, train, test, noise, 1.0)
    assert s_copy["memorised_fraction"] > 0.5 and s_new["memorised_fraction"] < 0.5
    np.testing.assert_array_equal(a_copy["nn_index"], np.arange(8))
    for s in (s_copy, s_new):
        assert s["random_codes_nn_ssim_mean"] < s["nn_ssim_mean"]
        assert s["n_samples"] == 8 and s["sampling_seconds"] == 1.0
    assert abs(s_new["floor_to_ceiling"] - 1.0) < 0.35     # new brains score like real test brains
    assert generation.floor_to_ceiling(0.5, 0.2, 0.8) == pytest.approx(0.5)


class _Ctx:
    def __init__(self, run_dir):
        self.run_dir = run_dir


def test_a_prior_for_another_codebook_is_refused(tmp_path):
    vqvae = build_vqvae((32, 32), num_codes=16, code_dim=4, channels=8, res_blocks=1)
    build_prior("gated", num_codes=32, grid=(8, 8), channels=8, num_layers=1).save(tmp_path / "prior.keras")
    with pytest.raises(BrainVQError, match="rerun 04_pixelcnn_training"):
        pipeline.load_prior(_Ctx(tmp_path), vqvae)
    build_prior("gated", num_codes=16, grid=(4, 4), channels=8, num_layers=1).save(tmp_path / "prior.keras")
    with pytest.raises(BrainVQError, match="grid"):
        pipeline.load_prior(_Ctx(tmp_path), vqvae)
    build_prior("gated", num_codes=16, grid=(8, 8), channels=8, num_layers=1).save(tmp_path / "prior.keras")
    prior, info = pipeline.load_prior(_Ctx(tmp_path), vqvae)
    assert info["num_codes"] == 16


def test_notebooks_04_05_need_their_inputs(tmp_path):
    with pytest.raises(BrainVQError, match="run 02_vqvae_training first"):
        pipeline.load_vqvae(_Ctx(tmp_path))
    with pytest.raises(BrainVQError, match="run 04_pixelcnn_training first"):
        pipeline.load_prior(_Ctx(tmp_path), None)


def test_evaluation_sets_match_positions_and_keep_subjects_apart(tmp_path):
    from brainvq_utils.data import load_dataset
    from brainvq_utils.synthetic import build_cohort
    build_cohort(tmp_path / "cohort", subjects=20, seed=0, size=32)
    ds = load_dataset("synthetic", tmp_path / "cohort")
    vqvae = build_vqvae((32, 32), num_codes=16, code_dim=4, channels=8, res_blocks=1)
    codes = {f"{s}_codes": np.zeros((len(getattr(ds, s)), 8, 8), "int32") for s in ("validate", "test")}
    codes["validate_position"] = np.asarray(ds.validate.slices, "int32")
    codes["validate_label"] = np.zeros(len(ds.validate), "int32")
    ev = pipeline.evaluation_sets(ds, codes, vqvae, {"num_positions": 32, "num_classes": 0}, 32, n=40, seed=1)
    (real, real_subjects), (other, other_subjects) = ev["real"], ev["real_other"]
    assert len(real) == len(other) == len(ev["reconstructions"][0]) == 40
    assert not set(real_subjects) & set(other_subjects)                 # two groups of held-out subjects
    np.testing.assert_array_equal(ev["reconstructions"][1], other_subjects)
    # samples are asked for at the positions of the slices they will be compared with
    np.testing.assert_array_equal(ev["conditions"]["position"], ev["positions"]["real_other"])
    assert set(ev["conditions"]) == {"position"}
    again = pipeline.evaluation_sets(ds, codes, vqvae, {"num_positions": 32, "num_classes": 0}, 32, n=40, seed=1)
    np.testing.assert_array_equal(again["real_other"][0], other)        # seeded
