"""The two-level prior (brainvq_utils.priors.layout): its layouts are read right, its code stage is
causal and keeps to the layout, both samplers draw the same maps, it saves and loads, and bad settings
stop with one line."""

import keras
import numpy as np
import pytest

from brainvq_utils import priors, sampling
from brainvq_utils.config import load_params
from brainvq_utils.errors import BrainVQError
from brainvq_utils.fast_sampling import fast_logits

BRAIN = [0, 0] + [1] * 14          # codes 0 and 1 decode to background, the rest to brain


def small(**kw):
    return priors.build_prior("layout", 16, (8, 8), num_positions=4, seed=0, channels=8, num_layers=2, layout_cell=4,
                              layout_channels=8, layout_layers=2, brain_codes=BRAIN, **kw)


def test_the_layout_of_a_code_map_says_where_the_brain_is():
    prior = small()
    codes = np.zeros((1, 8, 8), np.int32)          # all background ...
    codes[0, 4:, 4:] = 5                            # ... but a bottom-right block of brain
    codes[0, 0, 3] = 7                              # and one brain code in the top-left block
    np.testing.assert_array_equal(np.asarray(prior.layout_of(codes))[0], [[1, 0], [0, 2]])


def test_the_code_stage_is_causal_and_keeps_to_the_layout():
    prior = small()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (2, 8, 8)).astype(np.int32)
    layout = np.array([[[0, 1], [2, 1]]] * 2, np.int32)
    inputs = {"codes": codes, "position": np.array([0, 3]), "layout": layout}
    logits = np.asarray(prior(inputs))
    changed = codes.copy()
    changed[:, 5, 2] = (changed[:, 5, 2] + 3) % 16
    later = np.asarray(prior({**inputs, "codes": changed}))
    flat_before = np.arange(64).reshape(8, 8) <= 5 * 8 + 2
    np.testing.assert_allclose(logits[:, flat_before], later[:, flat_before], atol=1e-5)   # nothing at or before moved
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    assert probs[:, :4, :4, 2:].max() < 1e-6          # the empty top-left block: no brain code
    assert probs[:, 4:, :4, :2].max() < 1e-6          # the full bottom-left block: only brain codes


def test_both_samplers_draw_the_same_maps_and_keep_to_the_drawn_layout():
    prior = small()
    fast = sampling.sample(prior, 3, seed=4, position=[0, 1, 2], method="fast", progress=False)
    reference = sampling.sample(prior, 3, seed=4, position=[0, 1, 2], method="reference", progress=False)
    np.testing.assert_array_equal(fast, reference)
    layout = np.asarray(prior.layout_of(fast))
    drawn = sampling.sample(prior.layout_prior, 3, seed=4, position=[0, 1, 2], progress=False)
    np.testing.assert_array_equal(layout[drawn != 1], drawn[drawn != 1])       # empty and full blocks as drawn
    codes = fast
    np.testing.assert_allclose(fast_logits(prior, codes, position=[0, 1, 2]),
                               np.asarray(prior({"codes": codes, "position": np.array([0, 1, 2])})), atol=1e-4)


def test_it_trains_saves_and_loads(tmp_path):
    prior = small()
    prior.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    codes = np.random.default_rng(1).integers(0, 16, (8, 8, 8))
    inputs = priors.prior_inputs(codes, np.arange(8) % 4)
    history = prior.fit(priors.code_dataset(inputs, 4), epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    prior.save(tmp_path / "p.keras")
    again = keras.saving.load_model(tmp_path / "p.keras")
    np.testing.assert_allclose(np.asarray(again(inputs)), np.asarray(prior(inputs)), atol=1e-5)
    info = priors.prior_info(again)
    assert info["arch"] == "layout" and info["brain_codes"] == BRAIN
    bits, _ = prior.code_bits(inputs)
    assert bits.shape == (8, 8, 8) and np.isfinite(bits).all()


def test_bad_layout_settings_stop_with_one_line():
    with pytest.raises(BrainVQError, match="layout_cell=3 does not divide the \\(8, 8\\) code grid"):
        priors.build_prior("layout", 16, (8, 8), layout_cell=3, brain_codes=BRAIN)
    with pytest.raises(BrainVQError, match="needs brain_codes"):
        priors.build_prior("layout", 16, (8, 8))
    with pytest.raises(BrainVQError, match="layout_cell=5 does not divide"):
        load_params("demo", {"prior_arch": "layout", "layout_cell": 5})
    with pytest.raises(BrainVQError, match="pass layout="):
        sampling.sample(small().code_prior, 2, position=[0, 1], progress=False)
