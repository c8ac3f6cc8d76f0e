"""Sampling code maps from a prior: iterative parallel decoding for a masked-token prior, and a
reference and an exact fast sampler for the autoregressive priors.

**Iterative decoding** (``prior_info(prior)["sampling"] == "iterative"``, MaskGIT, Chang et al.
2022): every position starts masked; at each of ``steps`` steps the prior predicts every masked
position at once from what is known, a code is drawn at each (the draw below), and only the
most confident draws stay, so that the masked count follows the cosine schedule
(``priors.masked_counts``). The draw is ``keras.random.categorical`` over the tempered,
top-k logits (no per-code noise to share with another sampler, so the cheaper draw). Which draws stay is randomised by Gumbel noise on their
log-probabilities, scaled by ``choice_temperature`` and annealed to zero by the last step.

**Autoregressive priors** draw a code at a time in raster order. The noise is drawn up front for a whole batch
(Gumbel noise g of shape (B, h, w, K) from ``keras.random`` with the seed) and each code is

    c[i, j] = argmax_k ( z_k + g[i, j, k] ),   z = logits[i, j] / temperature,

with z set to -inf outside the ``top_k`` largest values: the Gumbel-max trick, an exact draw
from softmax(z) over the kept codes. Since both methods read the same noise, they return the
same code maps up to float round-off of the logits.

- ``method="reference"`` runs the whole prior on the whole grid once per position (h*w
  forward passes), as the keras.io VQ-VAE example and the original PixelCNN reports do.
- ``method="fast"`` computes, at each new position, only what that position changes, from caches
  of every layer's inputs (Ramachandran et al. 2017): ``fast_sampling`` holds it, and
  ``fast_sampling.fast_logits`` checks it against the whole prior.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from .errors import BrainVQError
from .priors import float32_copy, masked_counts, prior_info
from .progress import Bar

METHODS = ("fast", "reference")


# -- the draw ------------------------------------------------------------------------------
def gumbel_noise(shape, seed_generator):
    """Standard Gumbel noise -log(-log(u)), u ~ U(0, 1), from ``keras.random``."""
    u = keras.random.uniform(shape, minval=float(np.finfo("float32").tiny), maxval=1.0, seed=seed_generator)
    return -ops.log(-ops.log(u))


def _tempered(logits, temperature, top_k=None):
    """logits / temperature, set to -inf outside the ``top_k`` largest (None: all kept)."""
    z = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = ops.min(ops.top_k(z, top_k, sorted=False)[0], axis=-1, keepdims=True)
        z = ops.where(z >= kth, z, float("-inf"))
    return z


def pick_codes(logits, noise, temperature, top_k=None):
    """Codes (...,) int32 drawn from softmax(logits / temperature), restricted to the
    ``top_k`` largest logits (None: all), with the given Gumbel noise (``logits``' shape).
    ``temperature`` may be a tensor; ``top_k`` is a Python int (static in a compiled step)."""
    return ops.cast(ops.argmax(_tempered(logits, temperature, top_k) + noise, axis=-1), "int32")


# -- checks --------------------------------------------------------------------------------
def _as_int(name, value, low, high=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if not (isinstance(value, (float, np.floating)) and float(value).is_integer()):
            raise BrainVQError(f"{name}={value!r} must be an integer")
    value = int(value)
    if value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise BrainVQError(f"{name}={value} is out of range; use {span}")
    return value


def _conditioning(name, value, size, n):
    """(n,) int32 array of a position/label argument, or None; checked against the prior."""
    key = "num_positions" if name == "position" else "num_classes"
    if not size:
        if value is not None:
            raise BrainVQError(f"{name}={_short(value)} given, but this prior was built without {name} "
                               f"conditioning ({key}=0); leave {name}=None")
        return None
    if value is None:
        raise BrainVQError(f"this prior is conditioned on {name} ({key}={size}); pass {name}= an int "
                           f"in [0, {size}) or one per sample")
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0)):
        raise BrainVQError(f"{name}={_short(value)} must hold integers in [0, {size})")
    arr = arr.astype("int64").reshape(-1) if arr.ndim else np.full(n, int(arr))
    if arr.size != n:
        raise BrainVQError(f"{name} has {arr.size} values for n={n} samples; pass one int or n of them")
    if arr.min() < 0 or arr.max() >= size:
        raise BrainVQError(f"{name} values range over [{arr.min()}, {arr.max()}] but the prior knows "
                           f"{size} ({key}); use integers in [0, {size})")
    return arr.astype("int32")


def _layouts(prior, layout, n):
    """(n, h/cell, w/cell) int32 layouts for a code prior that draws given one, or None; checked."""
    levels = getattr(prior, "layout_levels", 0)
    if not levels:
        if layout is not None:
            raise BrainVQError("layout given, but this prior draws no codes given a layout; leave layout=None")
        return None
    cells = tuple(s // prior.layout_cell for s in prior.grid)
    if layout is None:
        raise BrainVQError(f"this prior draws codes given a coarse layout: pass layout= (n, {cells[0]}, {cells[1]}) ints "
                           f"in [0, {levels})")
    arr = np.asarray(layout)
    if arr.shape != (n, *cells) or arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= levels:
        raise BrainVQError(f"layout of shape {arr.shape} and range [{arr.min()}, {arr.max()}]: pass (n, {cells[0]}, "
                           f"{cells[1]}) ints in [0, {levels})")
    return arr.astype("int32")


def _short(value):
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


# -- reference sampler ------------------------------------------------------------------------
def _reference_batch(prior, noise, position, label, temperature, top_k, bar=None, layout=None):
    batch, height, width, _ = noise.shape
    codes = np.zeros((batch, height, width), "int32")
    inputs = {"codes": codes}
    if position is not None:
        inputs["position"] = position
    if label is not None:
        inputs["label"] = label
    if layout is not None:
        inputs["layout"] = layout
    for i in range(height):
        for j in range(width):
            logits = prior.predict_on_batch(inputs)   # the whole grid, every time
            code = pick_codes(ops.convert_to_tensor(logits[:, i, j]), noise[:, i, j], temperature, top_k)
            codes[:, i, j] = ops.convert_to_numpy(code)
            if bar is not None:
                bar.update(1)
    return codes


# -- iterative decoding (masked-token priors) ---------------------------------------------------
def _iterative_batch(prior, seed_generator, batch, position, label, temperature, top_k, steps, choice_temperature,
                     bar=None):
    """Codes (B, h, w) of one batch by MaskGIT's iterative parallel decoding."""
    (height, width), num_codes = prior.grid, prior.num_codes
    total = height * width
    codes = np.full((batch, height, width), num_codes, "int32")     # every position masked
    masked = np.ones((batch, total), bool)
    inputs = {}
    if position is not None:
        inputs["position"] = position
    if label is not None:
        inputs["label"] = label
    for t, still_masked in enumerate(masked_counts(total, steps)):
        logits = ops.reshape(ops.convert_to_tensor(prior.predict_on_batch({**inputs, "codes": codes})),
                             (batch * total, num_codes))
        drawn = keras.random.categorical(_tempered(logits, temperature, top_k), 1, seed=seed_generator)[:, 0]
        drawn = ops.cast(drawn, "int32")
        logp = (ops.take_along_axis(logits, ops.expand_dims(drawn, -1), axis=-1)[:, 0]
                - ops.logsumexp(logits, axis=-1))
        anneal = choice_temperature * (1.0 - (t + 1) / steps)
        choice = gumbel_noise((batch * total,), seed_generator)
        confidence = ops.convert_to_numpy(logp + anneal * choice).reshape(batch, total).astype(np.float64)
        drawn = ops.convert_to_numpy(drawn).reshape(batch, total)
        confidence[~masked] = np.inf                                  # known codes stay known
        keep_masked = np.zeros_like(masked)
        if still_masked:
            least = np.argsort(confidence, axis=1, kind="stable")[:, :still_masked]
            np.put_along_axis(keep_masked, least, True, axis=1)
        reveal = masked & ~keep_masked
        flat = codes.reshape(batch, total)
        flat[reveal] = drawn[reveal]
        masked = keep_masked
        if bar is not None:
            bar.update(1)
    return codes


# -- the public sampler ---------------------------------------------------------------------
def sample(prior, n, temperature=1.0, top_k=None, seed=0, position=None, label=None,
           method="fast", batch_size=16, progress=None, steps=12, choice_temperature=4.5, layout=None,
           allowed=None) -> np.ndarray:
    """Draw ``n`` code maps (n, h, w) int32 from a prior.

    Args:
        prior: a model from ``build_prior`` (or ``prior.keras`` loaded after
            ``import brainvq_utils``).
        n: number of code maps.
        temperature: divides the logits (> 0; < 1 sharper, > 1 flatter).
        top_k: keep only the k most likely codes at each position (1..K), or None for all.
        seed: seeds all the noise; the same seed, batch_size and settings give the same maps,
            by either method.
        position, label: the conditioning, one int for all samples or one per sample; only
            and always for a prior built with ``num_positions`` / ``num_classes``.
        method: autoregressive priors: ``"fast"`` (cached incremental computation, compiled)
            or ``"reference"`` (the whole prior on the whole grid at every position). An
            iterative prior has one method, its decoding, and ignores this.
        batch_size: samples generated together (the noise of a batch, B*h*w*K floats, is
            drawn at once: 32 MB for 16 maps of 32x32 over 512 codes).
        progress: show a tqdm bar (over positions for the reference, rows for fast, steps
            for iterative decoding); None: when someone watches (``progress.interactive()``).
            Under ``brainvq run`` the same count moves the command line's progress line.
        steps: iterative priors: decoding steps, 1 to h * w (each a full pass of the prior).
        choice_temperature: iterative priors: Gumbel noise on the confidences that decide
            which draws are kept, annealed to 0 by the last step (0: keep the most confident).
        layout: a code prior that draws given a coarse layout (``layout_levels``): one
            (h/cell, w/cell) layout per sample. A two-level prior (``priors.layout``) draws its
            layouts itself first, with its layout prior and ``seed``, then the codes with ``seed + 1``.
        allowed: with ``layout``, a function of a batch of layouts that gives the logit bias (B, h, w, K)
            of the codes each position allows (0) or forbids (very negative): it is added to the
            Gumbel noise, so both methods draw exactly from the restricted distribution.

    A prior built with a mixed-precision policy samples through its float32 copy
    (``priors.float32_copy``), so both methods run the same float32 arithmetic.
    """
    from .fast_sampling import _fast_batch   # it imports the draw and the checks from this module

    info = prior_info(prior)
    prior = float32_copy(prior)
    if getattr(prior, "layout_prior", None) is not None:     # two stages: the layout first, then the codes given it
        common = dict(position=position, label=label, method=method, batch_size=batch_size, progress=progress)
        layouts = sample(prior.layout_prior, n, temperature=temperature, seed=seed, **common)
        return sample(prior.code_prior, n, temperature=temperature, top_k=top_k, seed=seed + 1, layout=layouts,
                      allowed=prior.layout_bias, **common)
    n = _as_int("n", n, 1)
    batch_size = _as_int("batch_size", batch_size, 1)
    if method not in METHODS:
        raise BrainVQError(f"sampling method {method!r} is not known; use one of {METHODS}")
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise BrainVQError(f"temperature={temperature!r} must be a positive number, e.g. 1.0") from None
    if not (math.isfinite(temperature) and temperature > 0):
        raise BrainVQError(f"temperature={temperature} must be a positive finite number, e.g. 1.0")
    num_codes = info["num_codes"]
    top_k = None if top_k is None else _as_int("top_k", top_k, 1, num_codes)
    top_k = None if top_k == num_codes else top_k    # keeping all K codes masks nothing
    position = _conditioning("position", position, info["num_positions"], n)
    label = _conditioning("label", label, info["num_classes"], n)
    layout = _layouts(prior, layout, n)

    (height, width), batch = info["grid"], min(batch_size, n)
    iterative = info["sampling"] == "iterative"
    if iterative:
        steps = _as_int("steps", steps, 1, height * width)
        try:
            choice_temperature = float(choice_temperature)
        except (TypeError, ValueError):
            raise BrainVQError(f"choice_temperature={choice_temperature!r} must be a number >= 0, e.g. 4.5") from None
        if not (math.isfinite(choice_temperature) and choice_temperature >= 0):
            raise BrainVQError(f"choice_temperature={choice_temperature} must be a finite number >= 0, e.g. 4.5")
        method = "iterative"
    seed_generator = keras.random.SeedGenerator(seed)
    temperature_t = ops.convert_to_tensor(temperature, "float32")
    passes = steps if iterative else height if method == "fast" else height * width
    bar = Bar(passes * math.ceil(n / batch), f"sampling {n} code maps ({method})",
              {"fast": "row", "reference": "code", "iterative": "step"}[method], show=progress)
    out = []
    try:
        for start in range(0, n, batch):
            # A short last batch is padded to the batch size, so nothing is compiled twice.
            take = np.minimum(np.arange(start, start + batch), n - 1)
            pos = None if position is None else position[take]
            lab = None if label is None else label[take]
            lay = None if layout is None else layout[take]
            if iterative:
                codes = _iterative_batch(prior, seed_generator, batch, pos, lab, temperature_t, top_k, steps,
                                         choice_temperature, bar=bar)
                out.append(codes[: min(batch, n - start)])
                continue
            noise = gumbel_noise((batch, height, width, num_codes), seed_generator)
            if allowed is not None and lay is not None:   # argmax(z + g + bias): a draw among the allowed codes
                noise = noise + ops.convert_to_tensor(allowed(lay), noise.dtype)
            if method == "fast":
                codes, _ = _fast_batch(prior, noise, pos, lab, temperature_t, top_k, bar=bar, layout=lay)
            else:
                codes = _reference_batch(prior, noise, pos, lab, temperature_t, top_k, bar=bar, layout=lay)
            out.append(codes[: min(batch, n - start)])
    finally:
        bar.close()
    return np.concatenate(out, axis=0).astype("int32")
