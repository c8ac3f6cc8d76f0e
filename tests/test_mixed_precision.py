"""A global mixed-precision policy, as users copy it from Keras examples into an early notebook cell
(``keras.mixed_precision.set_global_policy("mixed_float16")``): the quantiser's codebook, EMA counts
and sums and distances, and the priors' logits and samplers stay float32."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from brainvq_utils import sampling  # noqa: E402
from brainvq_utils.config import PriorConfig, VQVAEConfig  # noqa: E402
from brainvq_utils.training import compile_vqvae, prior_builder  # noqa: E402
from brainvq_utils.vqvae import VectorQuantizer, build_vqvae  # noqa: E402

POLICIES = ["mixed_float16", "mixed_bfloat16"]


@pytest.fixture(params=POLICIES)
def global_policy(request):
    before = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(before)


def values(x):
    return keras.ops.convert_to_numpy(x)


def test_the_usage_counts_of_a_256_square_batch_do_not_overflow(global_policy):
    # 260 x 260 vectors of one code: more than float16's largest number, 65,504
    q = VectorQuantizer(8, 2, restart_below=0.0, name="q")
    q.build((None, 260, 260, 2))
    z = np.full((1, 260, 260, 2), 0.5, np.float32)
    out = q(z, training=True)
    assert q.compute_dtype == "float32" and all(v.dtype == "float32" for v in q.weights)
    counts = values(q.usage_counts)
    assert counts.max() == 260 * 260 and counts.sum() == 260 * 260
    assert np.isfinite(values(q.base)).all() and np.isfinite(values(q.ema_sum)).all()
    assert values(out).dtype == np.float32


def test_a_vqvae_trains_under_the_policy_with_a_float32_codebook(global_policy):
    keras.utils.set_random_seed(0)
    cfg = VQVAEConfig(num_codes=16, code_dim=4, channels=16, res_blocks=1, epochs=1)
    model = compile_vqvae(build_vqvae(32, cfg.num_codes, cfg.code_dim, cfg.channels, cfg.res_blocks), cfg)
    x = np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 1)).astype(np.float32)
    history = model.fit(x, x, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.quantizer.compute_dtype == "float32"
    assert np.isfinite(values(model.quantizer.codebook)).all() and values(model.quantizer.ema_count).sum() > 0
    recon = values(model.reconstruct(x[:4]))
    assert recon.dtype == np.float32 and 0 <= recon.min() and recon.max() <= 1
    assert values(model.encode(x[:4])).max() < cfg.num_codes


@pytest.mark.parametrize("arch", ["gated", "pixelcnn"])
def test_priors_keep_float32_logits_and_both_samplers_agree(global_policy, arch):
    cfg = PriorConfig(prior_arch=arch, prior_channels=8, prior_layers=2)
    prior = prior_builder(cfg, num_codes=6, grid=(4, 4))()
    codes = np.random.default_rng(0).integers(0, 6, (2, 4, 4)).astype(np.int32)
    logits = prior({"codes": codes})
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    fast = sampling.sample(prior, 3, seed=1, method="fast", progress=False)
    reference = sampling.sample(prior, 3, seed=1, method="reference", progress=False)
    np.testing.assert_array_equal(fast, reference)
