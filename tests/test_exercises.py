"""Every "Try this" exercise of the notebooks (brainvq_utils.exercises) runs through the step it changes,
on the smoke profile, so that none of them rots: its overrides are valid parameters, and the data set,
the VQ-VAE fit, the prior fit or the sampling they change runs to the end with them."""

import numpy as np
import pytest

from brainvq_utils import exercises, pipeline, priors, sampling, training
from brainvq_utils.config import DataConfig, PriorConfig, SamplingConfig, VQVAEConfig, load_params, stage_config

ALL = exercises.EXERCISES


def test_every_notebook_has_at_least_three():
    for nb in ("01", "02", "03", "04", "05"):
        assert len(exercises.for_notebook(nb)) >= 3, nb
    assert all(e.step in ("data", "vqvae", "prior", "sampling") and e.expect and e.rerun for e in ALL)
    text = exercises.markdown("04")
    assert text.startswith("Set `overrides`") and "`retrain = True`" in text   # a saved model is otherwise reused
    assert "\n1. `overrides = {'prior_arch': 'pixelcnn'}`" in text and text.count("\n1. ") == 1


@pytest.fixture(scope="module")
def smoke_data():
    params = load_params("smoke")
    return pipeline.open_dataset(stage_config(DataConfig, params))


def _params(exercise):
    return load_params("smoke", exercise.overrides)   # a one-line error for a wrong name or value


@pytest.mark.parametrize("exercise", [e for e in ALL if e.step == "data"], ids=lambda e: repr(e.overrides))
def test_data_exercises(exercise):
    cfg = stage_config(DataConfig, _params(exercise))
    ds = pipeline.open_dataset(cfg)
    batch = np.asarray(next(iter(ds.train.dataset(cfg.image_size, cfg.batch_size))))
    assert batch.shape[1:] == (cfg.image_size, cfg.image_size, 1) and np.isfinite(batch).all()


@pytest.mark.parametrize("exercise", [e for e in ALL if e.step == "vqvae"], ids=lambda e: repr(e.overrides))
def test_vqvae_exercises(exercise, smoke_data, tmp_path):
    params = _params(exercise)
    cfg = stage_config(VQVAEConfig, {**params, "epochs": 1, "steps_per_epoch": 3})
    data_cfg = stage_config(DataConfig, params)
    train = smoke_data.train.dataset(data_cfg.image_size, 8, with_targets=True, factor=cfg.downsample)
    val = smoke_data.validate.dataset(data_cfg.image_size, 16)
    model, history = training.train_vqvae(train, val, cfg, data_cfg.image_size, tmp_path, verbose=0)
    assert np.isfinite(history["loss"]).all() and model.num_codes == cfg.num_codes
    codes = np.asarray(model.encode(smoke_data.test.load(data_cfg.image_size, limit=2)))
    assert codes.shape[1:] == model.latent_grid and 0 <= codes.min() and codes.max() < cfg.num_codes


@pytest.mark.parametrize("exercise", [e for e in ALL if e.step == "prior"], ids=lambda e: repr(e.overrides))
def test_prior_exercises(exercise, tmp_path):
    params = _params(exercise)
    cfg = stage_config(PriorConfig, {**params, "prior_epochs": 1})
    rng = np.random.default_rng(0)
    grid, k, levels = (8, 8), params["num_codes"], 4
    codes = rng.integers(0, k, (24, *grid))
    positions, classes = pipeline.conditioning({"num_positions": levels, "label_names": []}, cfg)   # as 04 does
    inputs = priors.prior_inputs(codes, np.arange(24) % levels if positions else None)
    brain = np.arange(k) >= k // 4   # as pipeline.brain_codes says of a VQ-VAE's codes (the two-level prior needs it)
    build = training.prior_builder(cfg, k, grid, positions, classes, brain_codes=brain)
    prior, history = training.train_prior(priors.code_dataset(inputs, 8), priors.code_dataset(inputs, 8), cfg, build,
                                          tmp_path, verbose=0)
    assert np.isfinite(history["loss"]).all() and priors.prior_info(prior)["arch"] == cfg.prior_arch
    assert np.isfinite(training.prior_scores(prior, priors.code_dataset(inputs, 8))["bits_per_code"])


@pytest.mark.parametrize("exercise", [e for e in ALL if e.step == "sampling"], ids=lambda e: repr(e.overrides))
def test_sampling_exercises(exercise):
    cfg = stage_config(SamplingConfig, _params(exercise))
    prior = priors.build_prior("gated", 16, (6, 6), num_positions=4, channels=8, num_layers=2, seed=0)
    maps = sampling.sample(prior, 2, seed=0, position=[1, 2], progress=False, **pipeline.sampling_kwargs(cfg))
    assert maps.shape == (2, 6, 6) and 0 <= maps.min() and maps.max() < 16
