"""The samplers: the fast one equals the reference draw for draw, its logits equal the model's,
the draw follows softmax(logits / T) over the top k, and bad arguments fail clearly.

Backend-agnostic: run it under TensorFlow and again with KERAS_BACKEND=jax.
"""

import keras
import numpy as np
import pytest

from brainvq_utils.errors import BrainVQError
from brainvq_utils.priors import build_prior, float32_copy, masked_counts
from brainvq_utils.fast_sampling import fast_logits
from brainvq_utils.sampling import gumbel_noise, pick_codes, sample

K = 16


def np_(x):
    return keras.ops.convert_to_numpy(x)


def small_prior(arch="gated", grid=(8, 8), conditional=False, layers=3, seed=0, spread=6.0):
    """Random weights; the last layer is scaled so that logits, not the noise alone, decide.
    conditional: False, True (position, label, grid location and its map per position) or
    "location" (only the grid location)."""
    extra = {False: {}, True: dict(num_positions=4, num_classes=2, location=True, level_location=True),
             "location": dict(location=True)}[conditional]
    model = build_prior(arch, num_codes=K, grid=grid, channels=16, num_layers=layers, seed=seed, **extra)
    last = model.head2 if arch == "gated" else model.to_logits
    last.kernel.assign(last.kernel * spread)
    if extra.get("location"):   # trained-sized location maps, not the small initial ones
        model.location_embedding.assign(model.location_embedding * 20.0)
    if extra.get("level_location"):
        model.level_location_embedding.assign(model.level_location_embedding * 20.0)
    return model


def model_logits(model, codes, position=None, label=None):
    inputs = {"codes": codes}
    if position is not None:
        inputs["position"] = np.broadcast_to(position, len(codes)).astype("int32")
    if label is not None:
        inputs["label"] = np.broadcast_to(label, len(codes)).astype("int32")
    return np_(model(inputs))


CASES = [  # arch, grid, conditional
    ("gated", (8, 8), False),
    ("gated", (6, 10), True),
    ("gated", (5, 7), "location"),
    ("pixelcnn", (8, 8), False),
    ("pixelcnn", (6, 10), False),
]
SETTINGS = [  # seed, temperature, top_k
    (0, 1.0, None),
    (1, 0.7, 5),
    (2, 1.5, None),
    (3, 1.5, 5),
]


@pytest.mark.parametrize("arch,grid,conditional", CASES)
def test_fast_sampler_equals_the_reference_draw_for_draw(arch, grid, conditional):
    model = small_prior(arch, grid, conditional)
    cond = dict(position=[0, 3, 1], label=[1, 0, 1]) if conditional is True else {}
    for seed, temperature, top_k in SETTINGS:
        kw = dict(temperature=temperature, top_k=top_k, seed=seed, batch_size=2, **cond)  # 3 = 2 + a padded 1
        fast = sample(model, 3, method="fast", **kw)
        reference = sample(model, 3, method="reference", **kw)
        assert fast.shape == (3, *grid) and fast.dtype == np.int32
        np.testing.assert_array_equal(fast, reference, err_msg=f"seed {seed}, T {temperature}, top_k {top_k}")
        assert len(np.unique(fast)) > 3
        logits = model_logits(model, fast, cond.get("position"), cond.get("label"))
        if top_k is not None:   # every code is among the top k at its position
            kth = np.sort(logits, axis=-1)[..., -top_k]
            assert np.all(np.take_along_axis(logits, fast[..., None], -1)[..., 0] >= kth - 1e-6)


@pytest.mark.parametrize("arch,grid,conditional", CASES[:4])
def test_fast_logits_equal_the_model(arch, grid, conditional):
    model = small_prior(arch, grid, conditional)
    codes = np.random.default_rng(1).integers(0, K, (3, *grid)).astype("int32")
    cond = dict(position=np.array([0, 3, 2]), label=np.array([1, 0, 0])) if conditional is True else {}
    full = model_logits(model, codes, **cond)
    np.testing.assert_allclose(fast_logits(model, codes, **cond), full, atol=1e-4, rtol=0)


def test_top_1_is_greedy_decoding():
    model = small_prior("gated", (6, 10), conditional=True)
    codes = sample(model, 2, top_k=1, seed=4, position=2, label=1)
    # the logits at (i, j) only see earlier codes, so one pass over the result scores every step
    logits = model_logits(model, codes, 2, 1)
    np.testing.assert_array_equal(codes, logits.argmax(-1))
    # greedy decoding ignores the noise: another seed gives the same maps
    np.testing.assert_array_equal(sample(model, 2, top_k=1, seed=5, position=2, label=1), codes)


def test_draws_follow_the_tempered_top_k_softmax():
    model = small_prior("gated", (2, 3), spread=3.0)
    first = model_logits(model, np.zeros((1, 2, 3), "int32"))[0, 0, 0]   # (0, 0) has no context
    n = 6000
    for temperature, top_k in ((1.0, None), (0.6, 4)):
        codes = sample(model, n, temperature=temperature, top_k=top_k, seed=7, batch_size=n)[:, 0, 0]
        z = first / temperature
        if top_k:
            z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
        expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        observed = np.bincount(codes, minlength=K) / n
        assert np.all(observed[expected == 0] == 0)
        # within 4.5 standard errors everywhere
        assert np.all(np.abs(observed - expected) <= 4.5 * np.sqrt(expected * (1 - expected) / n) + 1e-9)


def test_pick_codes_is_the_gumbel_max_rule():
    logits = np.random.default_rng(2).normal(size=(5, K)).astype("float32")
    noise = np_(gumbel_noise((5, K), keras.random.SeedGenerator(3)))
    np.testing.assert_array_equal(np_(pick_codes(logits, noise, 2.0)), np.argmax(logits / 2.0 + noise, -1))
    top2 = np_(pick_codes(logits, noise, 1.0, top_k=2))
    for row, code in enumerate(top2):
        best = np.argsort(logits[row])[-2:]
        assert code == best[np.argmax(logits[row, best] + noise[row, best])]


def test_seeding():
    model = small_prior("gated", (4, 5))
    a = sample(model, 4, seed=11, batch_size=4)
    np.testing.assert_array_equal(a, sample(model, 4, seed=11, batch_size=4))
    assert not np.array_equal(a, sample(model, 4, seed=12, batch_size=4))
    assert not np.array_equal(a[0], a[1]), "samples of one batch draw different noise"


@pytest.mark.parametrize("arch", ["gated", "pixelcnn"])
def test_a_mixed_precision_prior_samples_in_float32(arch):
    """Both samplers take a bfloat16-trained prior's float32 copy: the same draws as the
    float32 twin, so the fast and the reference sampler still agree draw for draw."""
    extra = dict(num_positions=4, location=True) if arch == "gated" else {}
    mixed = build_prior(arch, num_codes=K, grid=(4, 5), channels=16, num_layers=2, seed=3,
                        dtype="mixed_bfloat16", **extra)
    twin = float32_copy(mixed)
    assert mixed.dtype_policy.name == "mixed_bfloat16" and twin.dtype_policy.name == "float32"
    cond = {"position": [0, 3, 1, 2]} if arch == "gated" else {}
    fast = sample(mixed, 4, seed=5, temperature=0.8, **cond)
    np.testing.assert_array_equal(fast, sample(twin, 4, seed=5, temperature=0.8, **cond))
    np.testing.assert_array_equal(fast, sample(mixed, 4, seed=5, temperature=0.8, method="reference", **cond))


def test_conditioning_changes_the_samples():
    model = small_prior("gated", (4, 5), conditional=True)
    a = sample(model, 4, seed=1, position=0, label=0)
    assert not np.array_equal(a, sample(model, 4, seed=1, position=3, label=0))
    assert not np.array_equal(a, sample(model, 4, seed=1, position=0, label=1))
    mixed = sample(model, 2, seed=1, position=[0, 3], label=[0, 0])
    assert mixed.shape == (2, 4, 5)


def test_progress_bar(capsys):
    model = small_prior("gated", (3, 4))
    sample(model, 2, progress=True)
    sample(model, 1, method="reference", progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "12/12" in err


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0), "temperature=0.0 must be a positive"),
    (dict(temperature=-1.0), "temperature=-1.0"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(top_k=0), r"top_k=0 is out of range; use 1\.\.16"),
    (dict(top_k=17), "top_k=17"),
    (dict(top_k=2.5), "top_k=2.5 must be an integer"),
    (dict(n=0), "n=0 is out of range"),
    (dict(method="beam"), "'beam' is not known"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(position=None), "conditioned on position"),
    (dict(position=4), r"position values range over \[4, 4\] but the prior knows 4"),
    (dict(position=[0, 1, 2]), "3 values for n=2"),
    (dict(label=None), "conditioned on label"),
    (dict(label=-1), r"label values range over \[-1"),
    (dict(label=0.5), "must hold integers"),
])
def test_bad_arguments(kwargs, match):
    model = small_prior("gated", (3, 4), conditional=True)
    args = {"n": 2, "position": 1, "label": 0, **kwargs}
    with pytest.raises(BrainVQError, match=match):
        sample(model, **args)


def test_conditioning_a_prior_without_it():
    model = small_prior("pixelcnn", (3, 4))
    with pytest.raises(BrainVQError, match="without position conditioning"):
        sample(model, 1, position=3)
    with pytest.raises(BrainVQError, match="without label conditioning"):
        sample(model, 1, label=0)
    with pytest.raises(BrainVQError, match="not a brainvq prior"):
        sample(keras.Sequential([keras.layers.Dense(2)]), 1)


# ----------------------------------------------------------------------------- iterative decoding
def small_maskgit(grid=(4, 6), seed=0, **extra):
    model = build_prior("maskgit", num_codes=K, grid=grid, channels=16, num_layers=2, heads=2, patch=2, seed=seed,
                        **extra)
    model.to_logits.kernel.assign(model.to_logits.kernel * 6.0)
    return model


def test_iterative_decoding_fills_every_position_and_is_seeded():
    model = small_maskgit(num_positions=4)
    a = sample(model, 5, seed=3, position=[0, 1, 2, 3, 0], steps=4, batch_size=3)
    b = sample(model, 5, seed=3, position=[0, 1, 2, 3, 0], steps=4, batch_size=3)
    assert a.shape == (5, 4, 6) and a.dtype == np.int32 and a.min() >= 0 and a.max() < K   # no mask token left
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample(model, 5, seed=4, position=[0, 1, 2, 3, 0], steps=4, batch_size=3))
    assert sample(model, 2, steps=24, position=1).shape == (2, 4, 6)      # one code per step


def test_one_step_greedy_decoding_is_the_argmax_of_a_masked_map():
    model = small_maskgit()
    codes = sample(model, 2, steps=1, top_k=1)
    logits = np_(model({"codes": np.full((2, 4, 6), K, "int32")}))
    np.testing.assert_array_equal(codes, logits.argmax(-1))


def test_iterative_decoding_keeps_the_most_confident_draws():
    """With top_k=1 and no choice noise, each step keeps the draws the prior is surest of, so
    the first codes fixed are those with the highest top probability on the masked map."""
    model = small_maskgit(seed=2)
    total, steps = 24, 3
    masked = np.full((1, 4, 6), K, "int32")
    logits = np_(model({"codes": masked}))[0].reshape(total, K)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    first = np.argsort(-logp.max(1))[: total - masked_counts(total, steps)[0]]
    one_step = sample(model, 1, steps=steps, top_k=1, choice_temperature=0.0)[0].reshape(total)
    np.testing.assert_array_equal(one_step[first], logits.argmax(1)[first])


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), r"steps=0 is out of range; use 1\.\.24"),
    (dict(steps=25), r"steps=25 is out of range"),
    (dict(choice_temperature=-1.0), "choice_temperature=-1.0"),
    (dict(choice_temperature="hot"), "choice_temperature='hot'"),
])
def test_bad_iterative_arguments(kwargs, match):
    with pytest.raises(BrainVQError, match=match):
        sample(small_maskgit(), 2, **kwargs)


def test_fast_logits_refuse_a_non_autoregressive_prior():
    with pytest.raises(BrainVQError, match="not autoregressive"):
        fast_logits(small_maskgit(), np.zeros((1, 4, 6), "int32"))
