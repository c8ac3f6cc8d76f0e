"""The full profile's models (OASIS/ADNI at 256x256, meant for a GPU) run end to end on the CPU
for a few steps, so that a first GPU run cannot fail after an hour on a shape or memory error
that the demo, at 128x128, never meets."""

import numpy as np
import pytest

from brainvq_utils import pipeline, priors, realism, sampling, training
from brainvq_utils.config import PriorConfig, SamplingConfig, VQVAEConfig, load_params, stage_config
from brainvq_utils.priors import prior_info
from brainvq_utils.synthetic import render_subject


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["layout", "maskgit"])   # the default (its code stage is the gated prior), and MaskGIT
def test_full_profile_trains_samples_and_scores_at_256(tmp_path, arch):
    import tensorflow as tf

    params = load_params("full", {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "prior_epochs": 1,
                                  "prior_batch_size": 2, "prior_arch": arch})
    size = params["image_size"]
    assert size == 256
    images = np.concatenate([render_subject(i, seed=1, size=size, slices=3)[..., None] for i in range(2)])
    images = images.astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(images).batch(2)
    vq_cfg = stage_config(VQVAEConfig, params)
    vqvae, history = training.train_vqvae(ds.map(lambda x: (x, x)), ds, vq_cfg, size, tmp_path, verbose=0)
    assert np.isfinite(history["loss"]).all() and tuple(vqvae.latent_grid) == (64, 64)
    codes = np.asarray(vqvae.encode(images))
    assert codes.shape == (6, 64, 64)

    prior_cfg = stage_config(PriorConfig, params)
    build = training.prior_builder(prior_cfg, vqvae.num_codes, vqvae.latent_grid, num_positions=3,
                                   brain_codes=pipeline.brain_codes(vqvae, codes))
    inputs = priors.prior_inputs(codes, np.tile(np.arange(3), 2))
    prior, prior_history = training.train_prior(priors.code_dataset(inputs, 2), priors.code_dataset(inputs, 2),
                                                prior_cfg, build, tmp_path, verbose=0)
    assert np.isfinite(prior_history["loss"]).all() and prior_info(prior)["grid"] == (64, 64)

    scfg = stage_config(SamplingConfig, params)
    maps = sampling.sample(prior, 1, position=1, seed=0, **{**pipeline.sampling_kwargs(scfg), "steps": 2})
    samples = pipeline.decode_codes(vqvae, maps)
    assert samples.shape == (1, size, size, 1) and np.isfinite(samples).all()
    assert realism.texture_features(samples).shape == realism.texture_features(images[:1]).shape
