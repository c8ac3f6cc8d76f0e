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
- ``method="fast"`` follows Ramachandran et al. 2017 ("Fast Generation for Convolutional
  Autoregressive Models"): every layer keeps a cache of the inputs it will read again and, at
  each new position, computes only the outputs that depend on it. For the gated prior the
  vertical stack of a row is computed once, when the row above is complete (one (r+1)-row
  window per layer), and the horizontal stack at a position needs a 1 x (r+1) window of the
  current row per layer. For the masked baseline every layer is computed at the new position
  only, from its (r+1)-row window of cached inputs (the first layer on one-hot codes as a sum
  of kernel rows picked by the codes). One row is one compiled call (``jax.jit`` under JAX,
  ``tf.function(jit_compile=True)`` under TensorFlow, eager elsewhere) looping over columns
  with ``ops.fori_loop``; the whole computation is written once in ``keras.ops``.
"""

from __future__ import annotations

import math
import weakref

import keras
import numpy as np
from keras import ops

from .errors import BrainVQError
from .priors import float32_copy, horizontal_step, masked_counts, prior_info, vertical_row
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


def _short(value):
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


# -- fast sampler: one row per compiled call -------------------------------------------------
def _rows(x, start, size):
    """x[:, start:start+size] along axis 1 for a traced start."""
    shape = list(x.shape)
    return ops.slice(x, [0, start] + [0] * (len(shape) - 2), [shape[0], size] + shape[2:])


def _put(x, start, values):
    """x with x[:, start:start+n] = values along axis 1 for a traced start."""
    return ops.slice_update(x, [0, start] + [0] * (len(x.shape) - 2), values)


def _next_code(logits, noise_row, forced_row, j, temperature, top_k, teacher):
    """The code at column j: drawn with the row's noise, or the given one (teacher forcing)."""
    if teacher:
        return _rows(forced_row, j, 1)[:, 0]
    return pick_codes(logits, _rows(noise_row, j, 1)[:, 0], temperature, top_k)


def _gated_row(p, state, cond, noise_row, forced_row, temperature, top_k=None, teacher=False):
    """Generate (or teacher-force) one row with the gated prior.

    state: (windows, last_emb). For row i, windows[l] (B, r+1, w+2r, Cin_l) holds layer l's
    vertical input at rows i-1-r..i-1, zero-padded by r columns; last_emb (B, w, E) is the
    embedding of row i-1 (zeros before the first row), which is the first layer's vertical
    input at row i. cond: the vertical and horizontal conditional biases, each (L, B, 2C),
    and the location biases of the vertical and horizontal gates on this row, each (L, B, w, 2C).
    Returns the new state, the row's codes (B, w) and, when teacher forcing, its logits
    (B, w, K) (else (B, w, 0)).
    """
    windows, last_emb = state
    cond_v, cond_h, loc_v, loc_h = cond
    batch, width, num_codes = noise_row.shape
    r = p["layers"][0]["h_kernel"].shape[1] - 1
    # Vertical stack: this row's outputs of every layer, from the rows above only.
    new_windows, links, row_in = [], [], last_emb
    for l, (lp, window) in enumerate(zip(p["layers"], windows)):
        padded = ops.pad(row_in, [[0, 0], [r, r], [0, 0]])[:, None]
        window = ops.concatenate([window[:, 1:], padded], axis=1)
        new_windows.append(window)
        row_in, link = vertical_row(lp, window, cond_v[l][:, None, :] + loc_v[l])
        links.append(link)
    # Horizontal stack: one position at a time. hbufs[l] holds layer l's horizontal input on
    # this row, left-padded so that the window for column j starts at j (the first layer's
    # input, the code embeddings, is moved right by one).
    hbufs = [ops.zeros((batch, width + r + 1, lp["h_kernel"].shape[2])) for lp in p["layers"]]
    init = (hbufs, ops.zeros((batch, width), "int32"), ops.zeros((batch, width, num_codes if teacher else 0)))

    def step(j, carry):
        hbufs, codes, logits_row = carry
        hbufs = list(hbufs)
        for l, lp in enumerate(p["layers"]):
            window = _rows(hbufs[l], j, r + 1)
            link = _rows(links[l], j, 1)[:, 0]
            bias = cond_h[l] + _rows(loc_h[l], j, 1)[:, 0]
            h = horizontal_step(lp, window, link, bias, first=(l == 0))
            if l + 1 < len(hbufs):
                hbufs[l + 1] = _put(hbufs[l + 1], j + r, h[:, None])
        x = ops.relu(ops.matmul(ops.relu(h), p["head1_kernel"]) + p["head1_bias"])
        logits = ops.matmul(x, p["head2_kernel"]) + p["head2_bias"]
        code = _next_code(logits, noise_row, forced_row, j, temperature, top_k, teacher)
        hbufs[0] = _put(hbufs[0], j + r + 1, ops.take(p["embedding"], code, axis=0)[:, None])
        if teacher:
            logits_row = _put(logits_row, j, logits[:, None])
        return hbufs, _put(codes, j, code[:, None]), logits_row

    _, codes, logits_row = ops.fori_loop(0, width, step, init)
    return (new_windows, ops.take(p["embedding"], codes, axis=0)), codes, logits_row


def _gated_init(prior, batch):
    w, r = prior.grid[1], prior.kernel_size // 2
    windows = [ops.zeros((batch, r + 1, w + 2 * r, layer.input_channels)) for layer in prior.gated_layers]
    return windows, ops.zeros((batch, w, prior.embedding_dim or prior.channels))


def _pixelcnn_row(p, state, cond, noise_row, forced_row, temperature, top_k=None, teacher=False):
    """Generate (or teacher-force) one row with the masked baseline.

    state: (past_codes, pasts). past_codes (B, r0, w+2r0) int32 holds the codes of the r0
    rows above, padded with the index K ("outside the grid", a zero kernel row); pasts[b]
    (B, rb, w+2rb, C) holds residual block b's masked-conv input on the rb rows above.
    """
    past_codes, pasts = state
    batch, width, num_codes = noise_row.shape
    r0, k0 = past_codes.shape[1], past_codes.shape[2] - width + 1
    channels = p["first_bias"].shape[0]
    n_taps = r0 * k0 + r0
    tap_offsets = ops.arange(n_taps, dtype="int32") * (num_codes + 1)
    curs = [ops.zeros((batch, past.shape[2], channels)) for past in pasts]
    init = (ops.full((batch, width + 2 * r0), num_codes, dtype="int32"), curs,
            ops.zeros((batch, width), "int32"), ops.zeros((batch, width, num_codes if teacher else 0)))

    def step(j, carry):
        cur_codes, curs, codes, logits_row = carry
        curs = list(curs)
        above = ops.reshape(ops.slice(past_codes, [0, 0, j], [batch, r0, k0]), (batch, r0 * k0))
        left = ops.slice(cur_codes, [0, j], [batch, r0])
        index = ops.concatenate([above, left], axis=1) + tap_offsets
        x = ops.relu(ops.sum(ops.take(p["first_taps"], index, axis=0), axis=1) + p["first_bias"])
        for b, bp in enumerate(p["blocks"]):
            rb = pasts[b].shape[1]
            kb = 2 * rb + 1
            a = ops.relu(ops.matmul(x, bp["conv1_kernel"]) + bp["conv1_bias"])
            curs[b] = _put(curs[b], j + rb, a[:, None])
            above = ops.reshape(ops.slice(pasts[b], [0, 0, j, 0], [batch, rb, kb, channels]), (batch, -1))
            row = ops.reshape(_rows(curs[b], j, rb + 1), (batch, -1))
            window = ops.concatenate([above, row], axis=1)
            m = ops.relu(ops.matmul(window, bp["masked_kernel"]) + bp["masked_bias"])
            x = x + ops.relu(ops.matmul(m, bp["conv2_kernel"]) + bp["conv2_bias"])
        for cp in p["output_convs"]:
            x = ops.relu(ops.matmul(x, cp["kernel"]) + cp["bias"])
        logits = ops.matmul(x, p["logits_kernel"]) + p["logits_bias"]
        code = _next_code(logits, noise_row, forced_row, j, temperature, top_k, teacher)
        cur_codes = _put(cur_codes, j + r0, code[:, None])
        if teacher:
            logits_row = _put(logits_row, j, logits[:, None])
        return cur_codes, curs, _put(codes, j, code[:, None]), logits_row

    cur_codes, curs, codes, logits_row = ops.fori_loop(0, width, step, init)
    past_codes = ops.concatenate([past_codes[:, 1:], cur_codes[:, None]], axis=1)
    pasts = [ops.concatenate([past[:, 1:], cur[:, None]], axis=1) for past, cur in zip(pasts, curs)]
    return (past_codes, pasts), codes, logits_row


def _pixelcnn_init(prior, batch):
    w, r0 = prior.grid[1], prior.first_kernel_size // 2
    past_codes = ops.full((batch, r0, w + 2 * r0), prior.num_codes, dtype="int32")
    pasts = [ops.zeros((batch, block.kernel_size // 2, w + 2 * (block.kernel_size // 2), prior.channels))
             for block in prior.blocks]
    return past_codes, pasts


_ROW_FUNCTIONS = {"gated": (_gated_row, _gated_init), "pixelcnn": (_pixelcnn_row, _pixelcnn_init)}

# Under TensorFlow the row step is compiled with XLA (jit_compile=True): on 2 CPU cores the
# gated prior (C=64, 8 layers, K=512, 32x32, batch 16) sampled in 0.93 s against 1.13 s for a
# plain tf.function graph.
TF_JIT_COMPILE = True
_JAX_ROWS = {}                            # arch -> jitted pure row step, weights as arguments
_TF_ROWS = weakref.WeakKeyDictionary()    # prior -> tf.function reading the prior's variables


def _row_step(prior):
    """The compiled one-row step of this prior:
    ``f(state, cond, noise_row, forced_row, temperature, top_k=..., teacher=...)``.

    JAX gets the weights as arguments of one ``jax.jit`` program per architecture (closed-over
    arrays would be frozen into it). TensorFlow reads the prior's variables inside a
    ``tf.function`` made per prior: variables are captured by reference, and passing ~60
    weight tensors per call would cost more than the row itself. Other backends run eagerly.
    """
    raw = _ROW_FUNCTIONS[prior.arch][0]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        if prior.arch not in _JAX_ROWS:
            _JAX_ROWS[prior.arch] = jax.jit(raw, static_argnames=("top_k", "teacher"))
        jitted, params = _JAX_ROWS[prior.arch], prior.fast_params()
        return lambda *args, **static: jitted(params, *args, **static)
    if backend == "tensorflow":
        import tensorflow as tf
        if prior not in _TF_ROWS:
            owner = weakref.ref(prior)

            def step(*args, **static):
                return raw(owner().fast_params(), *args, **static)

            # Python values (top_k, teacher) are part of the trace: one program per setting.
            _TF_ROWS[prior] = tf.function(step, jit_compile=TF_JIT_COMPILE)
        return _TF_ROWS[prior]
    params = prior.fast_params()
    return lambda *args, **static: raw(params, *args, **static)


def _fast_batch(prior, noise, position, label, temperature, top_k, forced=None, bar=None):
    """Codes (B, h, w) of one batch by the fast sampler, and the per-row logits [(B, w, K)]
    when teacher forcing ``forced`` codes (B, h, w) instead of drawing them."""
    batch, height = noise.shape[0], noise.shape[1]
    row_fn, state = _row_step(prior), _ROW_FUNCTIONS[prior.arch][1](prior, batch)
    if prior.arch == "gated":
        cond_v, cond_h, loc_v, loc_h = prior.fast_cond_biases(
            None if position is None else ops.convert_to_tensor(position),
            None if label is None else ops.convert_to_tensor(label), batch)
        row_cond = (lambda i: (cond_v, cond_h, loc_v[:, :, i], loc_h[:, :, i]))
    else:
        row_cond = (lambda i: ())
    teacher = forced is not None
    forced = ops.zeros(noise.shape[:3], "int32") if forced is None else ops.convert_to_tensor(forced, "int32")
    codes, logits = [], []
    for i in range(height):
        state, row, row_logits = row_fn(state, row_cond(i), noise[:, i], forced[:, i], temperature,
                                         top_k=top_k, teacher=teacher)
        codes.append(ops.convert_to_numpy(row))
        logits.append(row_logits)
        if bar is not None:
            bar.update(1)
    return np.stack(codes, axis=1).astype("int32"), logits


def fast_logits(prior, codes, position=None, label=None):
    """Logits (B, h, w, K) of given code maps, computed by the fast sampler's incremental
    path (teacher forcing): equal to ``prior(inputs)`` up to float round-off."""
    info = prior_info(prior)
    if info["sampling"] != "autoregressive":
        raise BrainVQError(f"fast_logits follows the autoregressive samplers; the {info['arch']!r} prior "
                           "is not autoregressive: call it on the codes instead")
    codes = np.asarray(codes)
    if codes.ndim != 3 or tuple(codes.shape[1:]) != info["grid"]:
        raise BrainVQError(f"code maps of shape {codes.shape} do not match the prior's grid {info['grid']}")
    if codes.min() < 0 or codes.max() >= info["num_codes"]:
        raise BrainVQError(f"codes range over [{codes.min()}, {codes.max()}]; use [0, {info['num_codes']})")
    n = codes.shape[0]
    position = _conditioning("position", position, info["num_positions"], n)
    label = _conditioning("label", label, info["num_classes"], n)
    noise = ops.zeros((*codes.shape, info["num_codes"]))
    _, logits = _fast_batch(prior, noise, position, label,
                            ops.convert_to_tensor(1.0), None, forced=codes.astype("int32"))
    return np.stack([ops.convert_to_numpy(x) for x in logits], axis=1)


# -- reference sampler ------------------------------------------------------------------------
def _reference_batch(prior, noise, position, label, temperature, top_k, bar=None):
    batch, height, width, _ = noise.shape
    codes = np.zeros((batch, height, width), "int32")
    inputs = {"codes": codes}
    if position is not None:
        inputs["position"] = position
    if label is not None:
        inputs["label"] = label
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
           method="fast", batch_size=16, progress=None, steps=12, choice_temperature=4.5) -> np.ndarray:
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

    A prior built with a mixed-precision policy samples through its float32 copy
    (``priors.float32_copy``), so both methods run the same float32 arithmetic.
    """
    info = prior_info(prior)
    prior = float32_copy(prior)
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
            if iterative:
                codes = _iterative_batch(prior, seed_generator, batch, pos, lab, temperature_t, top_k, steps,
                                         choice_temperature, bar=bar)
                out.append(codes[: min(batch, n - start)])
                continue
            noise = gumbel_noise((batch, height, width, num_codes), seed_generator)
            if method == "fast":
                codes, _ = _fast_batch(prior, noise, pos, lab, temperature_t, top_k, bar=bar)
            else:
                codes = _reference_batch(prior, noise, pos, lab, temperature_t, top_k, bar=bar)
            out.append(codes[: min(batch, n - start)])
    finally:
        bar.close()
    return np.concatenate(out, axis=0).astype("int32")
