"""The autoregressive priors: causality, no blind spot, conditioning, input checks, saving.

Backend-agnostic: run it under TensorFlow and again with KERAS_BACKEND=jax.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from brainvq_utils.errors import BrainVQError
from brainvq_utils.priors import MaskedConv2D, build_prior, causal_mask, prior_info

K, H, W = 16, 5, 7


def np_(x):
    return keras.ops.convert_to_numpy(x)


def influence(model, base, extra=None):
    """diff[s, t]: how much the logits at raster position t move when the code at s changes."""
    h, w = base.shape
    rng = np.random.default_rng(1)
    grids = np.repeat(base[None], h * w + 1, axis=0)
    for s in range(h * w):
        grids[s + 1].flat[s] = (base.flat[s] + rng.integers(1, K)) % K
    inputs = {"codes": grids, **{key: np.repeat(v, h * w + 1) for key, v in (extra or {}).items()}}
    out = np_(model(inputs))
    return np.abs(out[1:] - out[0]).max(axis=-1).reshape(h * w, h * w)


@pytest.mark.parametrize("arch", ["gated", "pixelcnn"])
def test_logits_depend_only_on_earlier_codes(arch):
    extra = {"position": np.array([3]), "label": np.array([1])} if arch == "gated" else {}
    conditioning = dict(num_positions=8, num_classes=2, location=True, level_location=True) if arch == "gated" else {}
    model = build_prior(arch, num_codes=K, grid=(H, W), channels=16, num_layers=3, seed=2, **conditioning)
    if arch == "gated":   # location maps as large as trained ones, so that they would show
        model.location_embedding.assign(model.location_embedding * 20.0)
        model.level_location_embedding.assign(model.level_location_embedding * 20.0)
    base = np.random.default_rng(0).integers(0, K, (H, W)).astype("int32")
    diff = influence(model, base, extra)
    n = H * W
    source, target = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    # the code at a position, and every code after it, leave its logits exactly unchanged
    assert diff[source >= target].max() < 1e-6
    # every position but the first is moved by some code before it: first row and column, last position
    targets = [1, W - 1, W, 2 * W, 2 * W + 3, n - W, n - 1]
    for t in targets:
        assert diff[:t, t].max() > 1e-3, f"no earlier code moves the logits at {divmod(t, W)}"
    for t in range(1, n):
        i, j = divmod(t, W)
        if j > 0:
            assert diff[t - 1, t] > 1e-4, f"left neighbour does not move {(i, j)}"
        if i > 0:
            assert diff[t - W, t] > 1e-4, f"the code above does not move {(i, j)}"
    assert np.all(diff[:, 0] < 1e-6), "the first position has no context"


def test_gated_prior_has_no_blind_spot():
    model = build_prior("gated", num_codes=K, grid=(H, W), channels=16, num_layers=3, seed=3)
    base = np.random.default_rng(4).integers(0, K, (H, W)).astype("int32")
    diff = influence(model, base)
    for i in range(1, H):
        for j in range(W - 2):
            # up and to the right: the blind spot of stacked masked convolutions
            assert diff[(i - 1) * W + j + 2, i * W + j] > 1e-4, f"(i-1, j+2) does not move {(i, j)}"


def test_masks():
    np.testing.assert_array_equal(causal_mask(3, "A"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask(3, "B"), [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    layer = MaskedConv2D(4, 3, "A")
    layer.build((None, 5, 5, 2))
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
    assert [w.name for w in layer.non_trainable_weights] == ["mask"]
    x = np.random.default_rng(5).normal(size=(1, 5, 5, 2)).astype("float32")
    y = np_(layer(x))
    x2 = x.copy()
    x2[0, 2, 2:] += 1.0      # the centre and everything after it
    x2[0, 3:] += 1.0
    np.testing.assert_allclose(np_(layer(x2))[0, 2, 2], y[0, 2, 2], atol=1e-6)
    kernel = np_(layer.kernel)
    assert np.all(kernel[1, 1] != 0), "the kernel itself is never zeroed, only multiplied by the mask"


def test_conditioning_changes_the_logits():
    model = build_prior("gated", num_codes=K, grid=(4, 6), channels=16, num_layers=2, num_positions=8,
                        num_classes=2, seed=5)
    codes = np.random.default_rng(6).integers(0, K, (1, 4, 6)).astype("int32")
    base = np_(model({"codes": codes, "position": np.array([1]), "label": np.array([0])}))
    other_position = np_(model({"codes": codes, "position": np.array([6]), "label": np.array([0])}))
    other_label = np_(model({"codes": codes, "position": np.array([1]), "label": np.array([1])}))
    assert base.shape == (1, 4, 6, K)
    # every position, the first included, sees the conditioning
    assert np.abs(other_position - base).max(axis=-1).min() > 1e-4
    assert np.abs(other_label - base).max(axis=-1).min() > 1e-4
    position_only = build_prior("gated", num_codes=K, grid=(4, 6), channels=16, num_layers=2, num_positions=8)
    assert prior_info(position_only)["num_classes"] == 0
    out = np_(position_only({"codes": np.repeat(codes, 2, 0), "position": np.array([0, 7])}))
    assert np.abs(out[0] - out[1]).max() > 1e-4


def test_location_conditioning_tells_grid_positions_apart():
    """With location=True, two positions with the same context (a constant code map) get
    different logits; without it, interior positions of a constant map are alike."""
    codes = np.full((1, 9, 9), 3, "int32")
    plain = build_prior("gated", num_codes=K, grid=(9, 9), channels=16, num_layers=2, seed=5)
    located = build_prior("gated", num_codes=K, grid=(9, 9), channels=16, num_layers=2, location=True, seed=5)
    assert prior_info(located)["location"] and not prior_info(plain)["location"]
    # (4, 4) and (5, 5): both see only code 3 around them, out of reach of the zero padding
    a, b = np_(plain(codes))[0], np_(located(codes))[0]
    np.testing.assert_allclose(a[4, 4], a[5, 5], atol=1e-5)
    assert np.abs(b[4, 4] - b[5, 5]).max() > 1e-4
    # the location map is a trained weight
    assert any("location_embedding" in w.path for w in located.trainable_weights)


@pytest.mark.parametrize("arch", ["gated", "pixelcnn"])
def test_shapes_and_info(arch):
    model = build_prior(arch, num_codes=K, grid=(6, 10), channels=8, num_layers=2, seed=0)
    out = np_(model({"codes": np.zeros((3, 6, 10), "int32")}))
    assert out.shape == (3, 6, 10, K)
    bare = np_(model(np.zeros((1, 6, 10), "int32")))    # a bare code array works too
    np.testing.assert_allclose(bare, out[:1], atol=1e-6)
    model.summary(print_fn=lambda *args, **kwargs: None)
    info = prior_info(model)
    assert info["arch"] == arch and info["num_codes"] == K and info["grid"] == (6, 10)
    assert info["num_positions"] == 0 and info["num_classes"] == 0


def test_keras_io_sized_baseline():
    model = build_prior("pixelcnn", num_codes=512, grid=(32, 32), channels=128, num_layers=2)
    # one-hot -> 7x7 mask A (128), 2 blocks (1x1 128, 3x3 mask B 64, 1x1 128), 2 x 1x1 mask B, 1x1 -> 512
    expected = (7 * 7 * 512 * 128 + 128) + 2 * ((128 * 128 + 128) + (9 * 128 * 64 + 64) + (64 * 128 + 128)) \
        + 2 * (128 * 128 + 128) + (128 * 512 + 512)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected


def test_the_prior_trains():
    model = build_prior("gated", num_codes=K, grid=(4, 4), channels=8, num_layers=2, num_positions=4, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    codes = np.tile(np.arange(16, dtype="int32").reshape(1, 4, 4), (32, 1, 1))
    x = {"codes": codes, "position": np.arange(32) % 4}
    first = model.evaluate(x, codes, verbose=0)
    model.fit(x, codes, epochs=10, batch_size=8, verbose=0)
    assert model.evaluate(x, codes, verbose=0) < first


def test_wrong_inputs_raise():
    model = build_prior("gated", num_codes=K, grid=(4, 6), channels=8, num_layers=2, num_positions=8)
    codes = np.zeros((2, 4, 6), "int32")
    pos = np.array([0, 1])
    with pytest.raises(BrainVQError, match=r"codes range over \[0, 16\].*16 codes"):
        model({"codes": codes + np.eye(4, 6, dtype="int32") * 16, "position": pos})
    with pytest.raises(BrainVQError, match=r"range over \[-1"):
        model({"codes": codes - 1, "position": pos})
    with pytest.raises(BrainVQError, match=r"\(2, 6, 4\) do not match the prior's grid \(4, 6\)"):
        model({"codes": np.zeros((2, 6, 4), "int32"), "position": pos})
    with pytest.raises(BrainVQError, match="conditioned on position"):
        model({"codes": codes})
    with pytest.raises(BrainVQError, match="without label conditioning"):
        model({"codes": codes, "position": pos, "label": pos})
    with pytest.raises(BrainVQError, match=r"position values range over \[0, 8\]"):
        model({"codes": codes, "position": np.array([0, 8])})
    with pytest.raises(BrainVQError, match="'slice'"):
        model({"codes": codes, "position": pos, "slice": pos})


@pytest.mark.parametrize("kwargs,match", [
    (dict(arch="transformer"), "'transformer' is not known"),
    (dict(arch="maskgit", kernel_size=3), "no setting \\['kernel_size'\\]"),
    (dict(arch="pixelcnn", num_positions=32), "takes no position or label"),
    (dict(arch="pixelcnn", num_classes=2), "takes no position or label"),
    (dict(arch="pixelcnn", location=True), "no embedding_dim or location"),
    (dict(kernel_size=4), "kernel_size 4 must be odd"),
    (dict(num_codes=1), "num_codes 1"),
    (dict(num_classes=1), "num_classes=1"),
    (dict(grid=(32, 0)), "grid"),
])
def test_bad_build_arguments(kwargs, match):
    with pytest.raises(BrainVQError, match=match):
        build_prior(**{"num_codes": K, "grid": (4, 4), "channels": 8, "num_layers": 1, **kwargs})


def test_prior_info_rejects_other_models():
    with pytest.raises(BrainVQError, match="is not a brainvq prior"):
        prior_info(keras.Sequential([keras.layers.Dense(2)]))


def _run_fresh(code, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_saved_priors_load_here_and_in_a_fresh_process_on_the_other_backend(tmp_path):
    rng = np.random.default_rng(7)
    cases = {
        "gated": (build_prior("gated", num_codes=K, grid=(4, 6), channels=8, num_layers=2, embedding_dim=4,
                              num_positions=8, num_classes=2, location=True, level_location=True, seed=1),
                  {"codes": rng.integers(0, K, (3, 4, 6)).astype("int32"), "position": np.array([0, 3, 7]),
                   "label": np.array([1, 0, 1])}),
        "pixelcnn": (build_prior("pixelcnn", num_codes=K, grid=(4, 6), channels=8, num_layers=1, seed=1),
                     {"codes": rng.integers(0, K, (3, 4, 6)).astype("int32")}),
        "maskgit": (build_prior("maskgit", num_codes=K, grid=(4, 6), channels=8, num_layers=1, heads=2, patch=2,
                                num_positions=8, seed=1),
                    {"codes": rng.integers(0, K + 1, (3, 4, 6)).astype("int32"), "position": np.array([0, 3, 7])}),
    }
    for name, (model, inputs) in cases.items():
        model.save(tmp_path / f"{name}.keras")
        y = np_(model(inputs))
        np.savez(tmp_path / f"{name}.npz", y=y, **inputs)
        loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
        assert type(loaded) is type(model) and prior_info(loaded) == prior_info(model)
        np.testing.assert_allclose(np_(loaded(inputs)), y, atol=1e-5)
    # TensorFlow-saved priors load under JAX and the other way round
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    code = ("import numpy as np, keras, brainvq_utils.priors as P\n"
            f"d = {str(tmp_path)!r}\n"
            "for name in ('gated', 'pixelcnn', 'maskgit'):\n"
            "    m = keras.saving.load_model(f'{d}/{name}.keras')\n"
            "    data = dict(np.load(f'{d}/{name}.npz')); y = data.pop('y')\n"
            "    np.testing.assert_allclose(keras.ops.convert_to_numpy(m(data)), y, atol=1e-5)\n"
            "    info = P.prior_info(m)\n"
            "    assert info['arch'] == name and info['num_codes'] == 16 and info['grid'] == (4, 6), info\n"
            "    assert (info['num_positions'], info['num_classes']) == {'gated': (8, 2), 'pixelcnn': (0, 0), 'maskgit': (8, 0)}[name]\n"
            "print('ok', keras.backend.backend())\n")
    done = _run_fresh(code, other)
    assert done.returncode == 0, f"{other}: {done.stderr[-2000:]}"
    assert f"ok {other}" in done.stdout


def test_importing_the_package_registers_the_priors():
    code = ("import keras, brainvq_utils\n"
            "for name in ('GatedPixelCNNPrior', 'PixelCNNPrior', 'GatedLayer', 'MaskedConv2D', 'MaskGITPrior',\n"
            "             'TransformerBlock'):\n"
            "    assert keras.saving.get_registered_object(f'brainvq>{name}') is not None, name\n"
            "print('ok')\n")
    done = _run_fresh(code, keras.backend.backend())
    assert done.returncode == 0 and "ok" in done.stdout, (
        "`import brainvq_utils` does not register the prior classes, so prior.keras will not load; "
        f"brainvq_utils/__init__.py must import .priors: {done.stderr[-500:]}")


# ----------------------------------------------------------------------------- the masked-token prior
def maskgit(**kw):
    return build_prior("maskgit", **{"num_codes": K, "grid": (4, 6), "channels": 16, "num_layers": 2, "heads": 2,
                                     "patch": 2, "seed": 4, **kw})


def test_maskgit_sees_both_sides_and_the_mask_token_is_an_input():
    from brainvq_utils.priors import masked_counts  # noqa: F401  (exported)
    model = maskgit(patch=1)
    codes = np.random.default_rng(2).integers(0, K, (1, 4, 6)).astype("int32")
    codes[0, 1, 2] = K                                           # the mask token
    base = np_(model({"codes": codes}))
    for (i, j) in [(0, 0), (3, 5), (1, 3)]:                      # before, after and beside the masked code
        moved = codes.copy()
        moved[0, i, j] = (moved[0, i, j] + 1) % K
        assert np.abs(np_(model({"codes": moved}))[0, 1, 2] - base[0, 1, 2]).max() > 1e-4, (i, j)
    with pytest.raises(BrainVQError, match=r"pass indices in \[0, 17\)"):
        model({"codes": codes + 1})
    assert prior_info(model)["sampling"] == "iterative" and prior_info(model)["patch"] == 1


def test_maskgit_patches_and_conditioning():
    model = maskgit(num_positions=8, num_classes=2)
    codes = np.full((2, 4, 6), K, "int32")
    out = np_(model({"codes": codes, "position": np.array([1, 6]), "label": np.array([0, 0])}))
    assert out.shape == (2, 4, 6, K)
    assert np.abs(out[0] - out[1]).max(axis=-1).min() > 1e-5    # every code sees the slice position
    with pytest.raises(BrainVQError, match="patch=3 must divide the code grid"):
        maskgit(patch=3)
    with pytest.raises(BrainVQError, match="divisible by heads"):
        maskgit(channels=10, heads=4)
    with pytest.raises(BrainVQError, match="no setting \\['location'\\]"):
        maskgit(location=True)


def test_masked_counts_follow_the_cosine_schedule():
    from brainvq_utils.priors import masked_counts
    counts = masked_counts(1024, 12)
    assert len(counts) == 12 and counts[-1] == 0 and all(a > b for a, b in zip([1024] + counts, counts))
    assert counts[0] == int(np.floor(1024 * np.cos(np.pi / 2 / 12)))      # most stay masked after step 1
    assert masked_counts(5, 5) == [4, 3, 2, 1, 0] and masked_counts(5, 1) == [0]
    for steps in (0, 6):
        with pytest.raises(BrainVQError, match=r"decoding steps=.* must lie in 1\.\.5"):
            masked_counts(5, steps)


def test_maskgit_code_bits_are_a_code_length():
    """Revealing in groups of one fixed order defines a distribution: 2^-bits sums to 1 over
    every map of a 2x2 grid of 3 codes."""
    import itertools
    model = build_prior("maskgit", num_codes=3, grid=(2, 2), channels=8, num_layers=1, heads=2, patch=1, seed=1)
    maps = np.array(list(itertools.product(range(3), repeat=4)), "int32").reshape(-1, 2, 2)
    for steps in (2, 4):
        bits, hits = model.code_bits({"codes": maps}, steps=steps, seed=3)
        assert bits.shape == maps.shape and hits.dtype == bool
        assert np.sum(2.0 ** -bits.reshape(len(maps), -1).sum(1)) == pytest.approx(1.0, abs=1e-4)


def test_level_location_gives_each_slice_position_its_own_layout():
    model = build_prior("gated", num_codes=K, grid=(9, 9), channels=16, num_layers=2, location=True,
                        level_location=True, num_positions=4, seed=5)
    model.level_location_embedding.assign(model.level_location_embedding * 20.0)
    codes = np.full((2, 9, 9), 3, "int32")
    out = np_(model({"codes": codes, "position": np.array([0, 3])}))
    # the same codes and the same grid position: the layout of each level differs in every block
    assert np.abs(out[0] - out[1]).max(axis=-1).min() > 1e-4
    maps = np_(model.location_map(np.array([0, 3]), 2))
    assert maps.shape == (2, 9, 9, 16)
    np.testing.assert_allclose(maps[0, 0, 0] - maps[0, 0, 1], np_(model.location_embedding)[0, 0] -
                               np_(model.location_embedding)[0, 1], atol=1e-5)   # one coarse value per 4x4 block
    assert any("level_location_embedding" in w.path for w in model.trainable_weights)
    with pytest.raises(BrainVQError, match="level_location=True needs location=True and num_positions > 0"):
        build_prior("gated", num_codes=K, grid=(9, 9), channels=8, num_layers=1, location=True, level_location=True)
