"""Autoregressive priors over VQ-VAE code maps (Keras 3, backend-agnostic).

A prior models a (h, w) grid of code indices in raster order (row by row, left to right):

    p(codes) = prod_{i, j} p(c[i, j] | c[<i, :], c[i, <j], position, label)

Two architectures share one interface (`build_prior`, `prior_info`, a dict input
``{"codes": (B, h, w) int32, "position": (B,) int32, "label": (B,) int32}`` and logits
(B, h, w, K) as output):

- ``"pixelcnn"``: the masked PixelCNN of van den Oord et al. 2016 ("Pixel Recurrent Neural
  Networks") as the keras.io VQ-VAE example builds it, the baseline: one-hot codes, a mask-A
  7x7 convolution, residual blocks (1x1, mask-B kxk, 1x1), two mask-B 1x1 convolutions and a
  1x1 convolution to K logits. Its stacked masks leave a blind spot up and to the right.
- ``"gated"``: the gated PixelCNN of van den Oord et al. 2016 ("Conditional Image Generation
  with PixelCNN Decoders"): a vertical stack that sees whole rows above and a horizontal stack
  that sees the current row up to the current position, joined by a 1x1 link from vertical to
  horizontal, so there is no blind spot. Every layer computes
  ``tanh(W_f * x + V_f c) * sigmoid(W_g * x + V_g c)``, with ``c`` the embedding of the slice
  position and of the class label (a conditional bias per layer) plus, with ``location=True``,
  a learned embedding of the grid position (i, j) itself: the paper's location-dependent
  conditioning ``V * s`` with a 1x1 map ``s``. Registered slices share their layout, so
  knowing where on the grid a code lies tells the prior where the brain's edge and midline
  are, which a stack of 3x3 layers that sees a few rows above cannot work out. It depends on
  no code, so causality is untouched.

The gated layers are written as full-grid convolutions for training (``call``) and as the
same arithmetic on one row (vertical stack) or one position (horizontal stack) for the fast
sampler in :mod:`brainvq_utils.sampling`; both read the same weights.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .errors import BrainVQError

PACKAGE = "brainvq"
ARCHITECTURES = ("gated", "pixelcnn")


def _glorot(seed, index):
    return keras.initializers.GlorotUniform(seed=None if seed is None else int(seed) * 1009 + index)


def causal_mask(kernel_size: int, mask_type: str) -> np.ndarray:
    """(k, k) raster-order mask: rows above the centre, and the centre row left of the centre
    (``"A"``) or up to and including it (``"B"``)."""
    if mask_type not in ("A", "B"):
        raise BrainVQError(f"mask type {mask_type!r} is not known; use 'A' (excludes the centre) or 'B'")
    k, r = int(kernel_size), int(kernel_size) // 2
    mask = np.zeros((k, k), "float32")
    mask[:r, :] = 1.0
    mask[r, : r + (mask_type == "B")] = 1.0
    return mask


def gate(x):
    """Gated activation tanh(a) * sigmoid(b) of the two halves of the last axis."""
    a, b = ops.split(x, 2, axis=-1)
    return ops.tanh(a) * ops.sigmoid(b)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedConv2D(layers.Layer):
    """A 'same' convolution whose kernel is multiplied by a causal mask in every call.

    The mask is a constant, non-trainable weight made in ``build``; the trainable kernel is
    never assigned to, so masked taps simply get no gradient.
    """

    def __init__(self, filters, kernel_size, mask_type="B", activation=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) % 2 != 1:
            raise BrainVQError(f"masked convolution kernel size {kernel_size} must be odd, e.g. 3 or 7")
        causal_mask(1, mask_type)  # validates the type
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.mask_type = mask_type
        self.activation = keras.activations.get(activation)
        self.seed = seed

    def build(self, input_shape):
        k, cin = self.kernel_size, int(input_shape[-1])
        self.kernel = self.add_weight(shape=(k, k, cin, self.filters), initializer=_glorot(self.seed, 0),
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self.mask = self.add_weight(shape=(k, k, 1, 1), initializer="ones", trainable=False, name="mask")
        self.mask.assign(causal_mask(k, self.mask_type)[:, :, None, None])
        super().build(input_shape)

    def masked_kernel(self):
        return self.kernel * self.mask

    def call(self, x):
        y = ops.conv(x, self.masked_kernel(), strides=1, padding="same") + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, mask_type=self.mask_type,
                      activation=keras.activations.serialize(self.activation), seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelResidualBlock(layers.Layer):
    """x + relu(1x1(relu(maskB_kxk(relu(1x1(x)))))), the keras.io example's residual block
    (the masked convolution has half the channels)."""

    def __init__(self, channels, kernel_size=3, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.seed = seed
        half = max(self.channels // 2, 1)
        policy = self.dtype_policy
        self.conv1 = layers.Dense(self.channels, activation="relu", kernel_initializer=_glorot(seed, 1),
                                  name="conv1", dtype=policy)
        self.pixel_conv = MaskedConv2D(half, self.kernel_size, "B", activation="relu",
                                       seed=None if seed is None else seed * 31 + 2, name="pixel_conv", dtype=policy)
        self.conv2 = layers.Dense(self.channels, activation="relu", kernel_initializer=_glorot(seed, 3),
                                  name="conv2", dtype=policy)

    def build(self, input_shape):
        shape = (*input_shape[:-1], self.channels)
        self.conv1.build(input_shape)
        self.pixel_conv.build(shape)
        self.conv2.build((*input_shape[:-1], self.pixel_conv.filters))
        super().build(input_shape)

    def call(self, x):
        return x + self.conv2(self.pixel_conv(self.conv1(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kernel_size=self.kernel_size, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedLayer(layers.Layer):
    """One layer of the gated PixelCNN, with a vertical and a horizontal stack.

    With r = k // 2, the vertical stack's output at row i sees its input at rows i-r..i and
    columns j-r..j+r; the first layer's input is the code embedding moved down one row, so
    the vertical stack at row i only ever depends on codes in rows above i. The horizontal
    stack at (i, j) sees its input at (i, j-r..j); in the first layer it is moved right by
    one, so that it sees codes (i, j-r-1..j-1) and never the current one (and the first layer
    has no residual connection, since its input holds the current code). The vertical
    convolution's output feeds the horizontal gate through a 1x1 link. Nothing reads the last
    layer's vertical output, so with ``last=True`` it is not made (``call`` returns None).

    ``call(v, h, cond)`` computes the whole grid; the module functions ``vertical_row`` and
    ``horizontal_step`` compute one row / one position of the same outputs from cached inputs.
    """

    def __init__(self, channels, kernel_size=3, first=False, last=False, cond_dim=0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) < 1 or int(kernel_size) % 2 != 1:
            raise BrainVQError(f"gated layer kernel size {kernel_size} must be odd, e.g. 3 or 5")
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.first = bool(first)
        self.last = bool(last)
        self.cond_dim = int(cond_dim)
        self.seed = seed

    @property
    def radius(self) -> int:
        return self.kernel_size // 2

    def build(self, input_shape):
        cin, c2, k, r = int(input_shape[-1]), 2 * self.channels, self.kernel_size, self.radius
        self.input_channels = cin
        self.v_kernel = self.add_weight(shape=(r + 1, k, cin, c2), initializer=_glorot(self.seed, 0),
                                        name="v_kernel")
        self.v_bias = self.add_weight(shape=(c2,), initializer="zeros", name="v_bias")
        self.h_kernel = self.add_weight(shape=(1, r + 1, cin, c2), initializer=_glorot(self.seed, 1),
                                        name="h_kernel")
        self.h_bias = self.add_weight(shape=(c2,), initializer="zeros", name="h_bias")
        self.v_to_h = self.add_weight(shape=(c2, c2), initializer=_glorot(self.seed, 2), name="v_to_h")
        self.h_out_kernel = self.add_weight(shape=(self.channels, self.channels),
                                            initializer=_glorot(self.seed, 3), name="h_out_kernel")
        self.h_out_bias = self.add_weight(shape=(self.channels,), initializer="zeros", name="h_out_bias")
        if self.cond_dim and not self.last:   # the last layer's vertical output is not used
            self.cond_to_v = self.add_weight(shape=(self.cond_dim, c2), initializer=_glorot(self.seed, 4),
                                             name="cond_to_v")
        if self.cond_dim:
            self.cond_to_h = self.add_weight(shape=(self.cond_dim, c2), initializer=_glorot(self.seed, 5),
                                             name="cond_to_h")
        super().build(input_shape)

    def cond_biases(self, cond, batch_size):
        """The conditional biases added to the vertical and horizontal gates: (..., 2C) for a
        conditioning ``cond`` of shape (..., cond_dim), e.g. (B, C) or a map (1, h, w, C);
        zeros (batch_size, 2C) without one."""
        zeros = ops.zeros((batch_size, 2 * self.channels), self.compute_dtype)
        if cond is None or not self.cond_dim:
            return zeros, zeros
        cond_h = ops.matmul(cond, self.cond_to_h)
        return (ops.zeros_like(cond_h) if self.last else ops.matmul(cond, self.cond_to_v)), cond_h

    # -- whole grid --------------------------------------------------------------------------
    def call(self, v, h, cond=None, location=None):
        """Vertical and horizontal outputs on the whole grid. cond: (B, cond_dim) or None;
        location: a (h, w, cond_dim) map added to it at every grid position, or None."""
        r, width = self.radius, ops.shape(h)[2]
        height = ops.shape(v)[1]
        batch = ops.shape(v)[0]
        if self.first:  # move down one row: the vertical stack at row i sees rows < i only
            v_src = ops.pad(v, [[0, 0], [r + 1, 0], [r, r], [0, 0]])[:, : height + r]
            h_src = ops.pad(h, [[0, 0], [0, 0], [r + 1, 0], [0, 0]])[:, :, : width + r]
        else:
            v_src = ops.pad(v, [[0, 0], [r, 0], [r, r], [0, 0]])
            h_src = ops.pad(h, [[0, 0], [0, 0], [r, 0], [0, 0]])
        cond_v, cond_h = self.cond_biases(cond, batch)
        cond_v, cond_h = cond_v[:, None, None, :], cond_h[:, None, None, :]
        if location is not None:
            loc_v, loc_h = self.cond_biases(location[None], 1)
            cond_v, cond_h = cond_v + loc_v, cond_h + loc_h
        v_conv = ops.conv(v_src, self.v_kernel, padding="valid") + self.v_bias
        v_out = None if self.last else gate(v_conv + cond_v)
        h_pre = (ops.conv(h_src, self.h_kernel, padding="valid") + self.h_bias
                 + ops.matmul(v_conv, self.v_to_h) + cond_h)
        h_out = ops.matmul(gate(h_pre), self.h_out_kernel) + self.h_out_bias
        return v_out, (h_out if self.first else h + h_out)

    def params(self) -> dict:
        """The weights the incremental functions read, as tensors."""
        names = ["v_kernel", "v_bias", "h_kernel", "h_bias", "v_to_h", "h_out_kernel", "h_out_bias"]
        return {name: ops.convert_to_tensor(getattr(self, name)) for name in names}

    def compute_output_shape(self, input_shape, h_shape=None, cond_shape=None):
        out = (*input_shape[:-1], self.channels)
        return out, out

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kernel_size=self.kernel_size, first=self.first, last=self.last,
                      cond_dim=self.cond_dim, seed=self.seed)
        return config


def vertical_row(p, window, cond_v):
    """Vertical outputs of one gated layer at one row, from cached inputs.

    window: (B, r+1, w+2r, Cin), the layer's vertical input (moved down one row in the first
    layer) at the r+1 rows ending at this row, zero-padded by r columns each side; p: the
    layer's ``params()``; cond_v: the conditional bias per column, (B, w, 2C) (or (B, 1, 2C)).
    Returns the gated row (B, w, C) and the vertical
    link into the horizontal gate (B, w, 2C), equal to row i of ``GatedLayer.call``.
    """
    rows, kw, cin = p["v_kernel"].shape[:3]
    width = window.shape[2] - kw + 1
    # The convolution as one matmul over the (r+1) x k taps (faster than a 1-row conv on CPU).
    taps = ops.concatenate([window[:, a, b: b + width] for a in range(rows) for b in range(kw)], axis=-1)
    v_conv = ops.matmul(taps, ops.reshape(p["v_kernel"], (rows * kw * cin, -1))) + p["v_bias"]
    return gate(v_conv + cond_v), ops.matmul(v_conv, p["v_to_h"])


def horizontal_step(p, window, link, cond_h, first):
    """Horizontal output of one gated layer at one position, from cached inputs.

    window: (B, r+1, Cin), the layer's horizontal input at the r+1 columns ending at this
    position (moved right by one in the first layer); link: the vertical link at this
    position (B, 2C); cond_h: (B, 2C). Returns (B, C), equal to ``GatedLayer.call`` there.
    """
    taps, cin = window.shape[1], window.shape[2]
    kernel = ops.reshape(p["h_kernel"], (taps * cin, -1))
    h_pre = ops.matmul(ops.reshape(window, (-1, taps * cin)), kernel) + p["h_bias"] + link + cond_h
    h_out = ops.matmul(gate(h_pre), p["h_out_kernel"]) + p["h_out_bias"]
    return h_out if first else window[:, taps - 1] + h_out


def _concrete_numpy(x):
    """``x`` as a NumPy array when it holds values now (eager), else None (traced)."""
    if isinstance(x, (np.ndarray, np.generic, int, list, tuple)):
        return np.asarray(x)
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            if isinstance(x, tf.Tensor) and tf.executing_eagerly():
                return x.numpy()
        elif backend == "jax":
            import jax
            if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
                return np.asarray(x)
        elif backend == "numpy":
            return np.asarray(x)
    except Exception:  # a symbolic tensor: nothing to check now
        return None
    return None


class _Prior(keras.Model):
    """What both architectures share: configuration, input checks, conditioning."""

    arch = None

    def __init__(self, num_codes=512, grid=(32, 32), channels=64, num_layers=8, kernel_size=3,
                 embedding_dim=None, num_positions=0, num_classes=0, location=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_codes = int(num_codes)
        self.grid = tuple(int(s) for s in grid)
        self.channels = int(channels)
        self.num_layers = int(num_layers)
        self.kernel_size = int(kernel_size)
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.num_positions = int(num_positions or 0)
        self.num_classes = int(num_classes or 0)
        self.location = bool(location)
        self.seed = seed

    @property
    def conditional(self) -> bool:
        return bool(self.num_positions or self.num_classes)

    @property
    def logits_dtype(self) -> str:
        """The last layer computes in the variables' dtype (float32 under a mixed policy), so
        that the softmax and the loss see full-precision logits."""
        return self.dtype_policy.variable_dtype

    def get_config(self):
        config = super().get_config()
        config.update(num_codes=self.num_codes, grid=list(self.grid), channels=self.channels,
                      num_layers=self.num_layers, kernel_size=self.kernel_size,
                      embedding_dim=self.embedding_dim, num_positions=self.num_positions,
                      num_classes=self.num_classes, location=self.location, seed=self.seed)
        return config

    def build_from_config(self, config):  # every weight is made in __init__
        pass

    def _unpack(self, inputs):
        """-> codes, position, label; checks shapes always and values when eager."""
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"codes", "position", "label"}
            if unknown:
                raise BrainVQError(f"prior inputs {sorted(unknown)} are not known; "
                                   "pass a dict with 'codes' and, if built with them, 'position', 'label'")
            if "codes" not in inputs:
                raise BrainVQError("prior inputs lack 'codes': pass {'codes': (B, h, w) int32 code maps, ...}")
            codes, position, label = inputs["codes"], inputs.get("position"), inputs.get("label")
        else:
            codes, position, label = inputs, None, None
        shape = tuple(codes.shape)
        if len(shape) != 3 or tuple(shape[1:]) != self.grid:
            raise BrainVQError(f"code maps of shape {shape} do not match the prior's grid {self.grid}; "
                               f"pass (B, {self.grid[0]}, {self.grid[1]}) int32 codes")
        values = _concrete_numpy(codes)
        if values is not None and values.size and (values.min() < 0 or values.max() >= self.num_codes):
            raise BrainVQError(f"codes range over [{values.min()}, {values.max()}] but the prior has "
                               f"{self.num_codes} codes; pass indices in [0, {self.num_codes})")
        for key, value, size in (("position", position, self.num_positions), ("label", label, self.num_classes)):
            if size and value is None:
                raise BrainVQError(f"this prior is conditioned on {key} (0..{size - 1}); "
                                   f"pass inputs['{key}'] as (B,) int32")
            if not size and value is not None:
                option = "num_positions" if key == "position" else "num_classes"
                raise BrainVQError(f"this prior was built without {key} conditioning; "
                                   f"drop inputs['{key}'] or build with {option} > 0")
            if value is not None:
                concrete = _concrete_numpy(value)
                if concrete is not None and concrete.size and (concrete.min() < 0 or concrete.max() >= size):
                    raise BrainVQError(f"{key} values range over [{concrete.min()}, {concrete.max()}] "
                                       f"but the prior knows {size}; pass integers in [0, {size})")
        codes = ops.cast(codes, "int32")
        position = None if position is None else ops.cast(ops.reshape(position, (-1,)), "int32")
        label = None if label is None else ops.cast(ops.reshape(label, (-1,)), "int32")
        return codes, position, label


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelCNNPrior(_Prior):
    """The masked PixelCNN baseline (no conditioning). ``num_layers`` residual blocks."""

    arch = "pixelcnn"
    first_kernel_size = 7
    num_output_convs = 2

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.conditional:
            raise BrainVQError("the 'pixelcnn' baseline takes no position or label conditioning; "
                               "use arch='gated' or num_positions=num_classes=0")
        if self.embedding_dim is not None or self.location:
            raise BrainVQError("the 'pixelcnn' baseline reads one-hot codes and has no embedding_dim or "
                               "location embedding; leave them at None / False or use arch='gated'")
        s, c, policy = self.seed, self.channels, self.dtype_policy
        sub = (lambda i: None if s is None else int(s) * 101 + i)
        self.first_conv = MaskedConv2D(c, self.first_kernel_size, "A", activation="relu", seed=sub(0),
                                       name="first_conv", dtype=policy)
        self.blocks = [PixelResidualBlock(c, self.kernel_size, seed=sub(1 + i), name=f"block{i}", dtype=policy)
                       for i in range(self.num_layers)]
        self.output_convs = [MaskedConv2D(c, 1, "B", activation="relu", seed=sub(50 + i), name=f"out_conv{i}",
                                          dtype=policy)
                             for i in range(self.num_output_convs)]
        self.to_logits = layers.Dense(self.num_codes, kernel_initializer=_glorot(sub(60), 0), name="to_logits",
                                      dtype=self.logits_dtype)
        h, w = self.grid
        self.first_conv.build((None, h, w, self.num_codes))
        for layer in (*self.blocks, *self.output_convs, self.to_logits):
            layer.build((None, h, w, c))
        self.built = True

    def call(self, inputs, training=False):
        codes, _, _ = self._unpack(inputs)
        x = self.first_conv(ops.one_hot(codes, self.num_codes))
        for block in self.blocks:
            x = block(x)
        for conv in self.output_convs:
            x = conv(x)
        return self.to_logits(x)

    def fast_params(self) -> dict:
        """Every weight the fast sampler reads, as a tree of tensors, with each masked kernel
        cut down to its live taps in raster order (rows above, then the current row)."""
        t = ops.convert_to_tensor
        k0, r0, K = self.first_kernel_size, self.first_kernel_size // 2, self.num_codes
        first = self.first_conv.masked_kernel()                       # (k0, k0, K, C), mask A
        taps = ops.concatenate([ops.reshape(first[:r0], (r0 * k0, K, -1)), first[r0, :r0]], axis=0)
        # One extra all-zero row per tap stands for "outside the grid" (code index K).
        taps = ops.pad(taps, [[0, 0], [0, 1], [0, 0]])
        blocks = []
        for block in self.blocks:
            kb, rb = block.kernel_size, block.kernel_size // 2
            kernel = block.pixel_conv.masked_kernel()                 # (kb, kb, C, C/2), mask B
            live = ops.concatenate([ops.reshape(kernel[:rb], (rb * kb * self.channels, -1)),
                                    ops.reshape(kernel[rb, : rb + 1], ((rb + 1) * self.channels, -1))], axis=0)
            blocks.append({"conv1_kernel": t(block.conv1.kernel), "conv1_bias": t(block.conv1.bias),
                           "masked_kernel": live, "masked_bias": t(block.pixel_conv.bias),
                           "conv2_kernel": t(block.conv2.kernel), "conv2_bias": t(block.conv2.bias)})
        return {"first_taps": ops.reshape(taps, (-1, self.channels)), "first_bias": t(self.first_conv.bias),
                "blocks": blocks,
                "output_convs": [{"kernel": ops.reshape(conv.masked_kernel(), (self.channels, self.channels)),
                                  "bias": t(conv.bias)} for conv in self.output_convs],
                "logits_kernel": t(self.to_logits.kernel), "logits_bias": t(self.to_logits.bias)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedPixelCNNPrior(_Prior):
    """The gated PixelCNN (vertical + horizontal stacks, no blind spot), optionally
    conditioned on slice position and class label."""

    arch = "gated"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        s, c, k, policy = self.seed, self.channels, self.kernel_size, self.dtype_policy
        if k < 1 or k % 2 != 1:
            raise BrainVQError(f"kernel_size {k} must be odd, e.g. 3 or 5")
        sub = (lambda i: None if s is None else int(s) * 101 + i)
        emb_dim = self.embedding_dim or c
        normal = (lambda i: keras.initializers.RandomNormal(0.0, 1.0, seed=sub(i)))
        self.code_embedding = layers.Embedding(self.num_codes, emb_dim, embeddings_initializer=normal(0),
                                               name="code_embedding", dtype=policy)
        self.position_embedding = (layers.Embedding(self.num_positions, c, embeddings_initializer=normal(1),
                                                    name="position_embedding", dtype=policy)
                                   if self.num_positions else None)
        self.label_embedding = (layers.Embedding(self.num_classes, c, embeddings_initializer=normal(2),
                                                 name="label_embedding", dtype=policy) if self.num_classes else None)
        h, w = self.grid
        # Small at the start, so that the prior first learns from the codes themselves.
        self.location_embedding = (self.add_weight(shape=(h, w, c), name="location_embedding",
                                                   initializer=keras.initializers.RandomNormal(0.0, 0.1, seed=sub(3)))
                                   if self.location else None)
        cond_dim = c if (self.conditional or self.location) else 0
        self.gated_layers = [GatedLayer(c, k, first=(i == 0), last=(i == self.num_layers - 1), cond_dim=cond_dim,
                                        seed=sub(10 + i), name=f"gated{i}", dtype=policy)
                              for i in range(self.num_layers)]
        self.head1 = layers.Dense(c, kernel_initializer=_glorot(sub(60), 0), name="head1", dtype=policy)
        self.head2 = layers.Dense(self.num_codes, kernel_initializer=_glorot(sub(61), 0), name="head2",
                                  dtype=self.logits_dtype)
        self.code_embedding.build((None, h, w))
        for emb in (self.position_embedding, self.label_embedding):
            if emb is not None:
                emb.build((None,))
        for i, layer in enumerate(self.gated_layers):
            layer.build((None, h, w, emb_dim if i == 0 else c))
        self.head1.build((None, h, w, c))
        self.head2.build((None, h, w, c))
        self.built = True

    def condition(self, position, label):
        """Embedding (B, C) of the conditioning, or None for an unconditional prior."""
        cond = None
        if self.position_embedding is not None:
            cond = self.position_embedding(position)
        if self.label_embedding is not None:
            lab = self.label_embedding(label)
            cond = lab if cond is None else cond + lab
        return cond

    def head(self, h):
        """Logits from the last horizontal output: ReLU, 1x1, ReLU, 1x1 to K."""
        return self.head2(ops.relu(self.head1(ops.relu(h))))

    def fast_params(self) -> dict:
        """Every weight the fast sampler reads, as a tree of tensors."""
        t = ops.convert_to_tensor
        return {"layers": [layer.params() for layer in self.gated_layers],
                "embedding": t(self.code_embedding.embeddings),
                "head1_kernel": t(self.head1.kernel), "head1_bias": t(self.head1.bias),
                "head2_kernel": t(self.head2.kernel), "head2_bias": t(self.head2.bias)}

    def fast_cond_biases(self, position, label, batch_size):
        """The conditional biases of the vertical and horizontal gates, each (L, B, 2C), and
        the location biases of the same gates, each (L, h, w, 2C) (zeros without location)."""
        cond = self.condition(position, label) if self.conditional else None
        biases = [layer.cond_biases(cond, batch_size) for layer in self.gated_layers]
        h, w = self.grid
        if self.location_embedding is None:
            loc_v = loc_h = ops.zeros((len(self.gated_layers), h, w, 2 * self.channels))
        else:
            loc = [layer.cond_biases(ops.convert_to_tensor(self.location_embedding), 1)
                   for layer in self.gated_layers]
            loc_v, loc_h = ops.stack([b[0] for b in loc]), ops.stack([b[1] for b in loc])
        return ops.stack([b[0] for b in biases]), ops.stack([b[1] for b in biases]), loc_v, loc_h

    def call(self, inputs, training=False):
        codes, position, label = self._unpack(inputs)
        cond = self.condition(position, label)
        v = h = self.code_embedding(codes)
        location = None if self.location_embedding is None else ops.cast(self.location_embedding, self.compute_dtype)
        for layer in self.gated_layers:
            v, h = layer(v, h, cond, location)
        return self.head(h)


def build_prior(arch="gated", num_codes=512, grid=(32, 32), channels=64, num_layers=8, kernel_size=3,
                embedding_dim=None, num_positions=0, num_classes=0, location=False, seed=0,
                dtype=None) -> keras.Model:
    """An autoregressive prior over (h, w) maps of ``num_codes`` codes.

    Args:
        arch: ``"gated"`` (gated PixelCNN, optional conditioning) or ``"pixelcnn"`` (masked
            baseline; ``num_layers`` residual blocks, e.g. 2 blocks of 128 channels as keras.io).
        num_codes: codebook size K (the logits' last axis).
        grid: (h, w) of the code maps (an int for a square grid).
        channels: feature channels C of every layer.
        num_layers: gated layers, or residual blocks of the baseline.
        kernel_size: odd kernel of the gated stacks (vertical (k//2+1) x k, horizontal
            1 x (k//2+1)), or of the baseline's mask-B convolutions.
        embedding_dim: code embedding size of the gated prior (default: ``channels``).
        num_positions: slice positions S to condition on (0: none).
        num_classes: class labels to condition on (0: none).
        location: condition every gated layer on a learned embedding of the grid position
            (i, j) (gated prior only).
        seed: seed of the initial weights.
        dtype: Keras dtype policy, e.g. ``"mixed_bfloat16"`` to train in bfloat16 with float32
            weights (the logits stay float32); None: the global policy (float32 by default).
            ``float32_copy`` turns a trained mixed-precision prior into a float32 one.

    The model takes ``{"codes": (B, h, w) int32}`` plus ``"position"`` / ``"label"`` (B,) int32
    when built with them, and returns logits (B, h, w, K).
    """
    if arch not in ARCHITECTURES:
        raise BrainVQError(f"prior architecture {arch!r} is not known; use one of {ARCHITECTURES}")
    grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if len(grid) != 2 or min(grid) < 1:
        raise BrainVQError(f"prior grid {grid} must be two positive sizes (h, w), e.g. (32, 32)")
    if int(num_codes) < 2:
        raise BrainVQError(f"num_codes {num_codes} must be at least 2 (the VQ-VAE's codebook size)")
    if int(channels) < 1 or int(num_layers) < (0 if arch == "pixelcnn" else 1):
        raise BrainVQError(f"channels {channels} and num_layers {num_layers} must be positive")
    for key, value in (("num_positions", num_positions), ("num_classes", num_classes)):
        if int(value or 0) < 0 or int(value or 0) == 1:
            raise BrainVQError(f"{key}={value}: use 0 for no conditioning or at least 2 values")
    cls = GatedPixelCNNPrior if arch == "gated" else PixelCNNPrior
    return cls(num_codes=num_codes, grid=grid, channels=channels, num_layers=num_layers,
               kernel_size=kernel_size, embedding_dim=embedding_dim, num_positions=num_positions,
               num_classes=num_classes, location=location, seed=seed, name=f"{arch}_prior", dtype=dtype)


def float32_copy(model):
    """The same prior computing in float32: ``model`` itself when it already does, else a
    twin built with the float32 policy that holds the same (float32) weights.

    A prior trained under ``mixed_bfloat16`` keeps its weights in float32, so nothing is
    rounded; only the arithmetic changes. The samplers and the saved ``prior.keras`` use
    this copy, so the fast and the reference sampler run the same arithmetic.
    """
    prior_info(model)
    if model.dtype_policy.name == "float32":
        return model
    twin = model.__class__.from_config({**model.get_config(), "dtype": "float32"})
    twin.set_weights(model.get_weights())
    return twin


def prior_info(model) -> dict:
    """What a (possibly loaded) prior was built with: arch, num_codes, grid, channels,
    num_layers, kernel_size, embedding_dim, num_positions, num_classes, location."""
    if not isinstance(model, _Prior):
        raise BrainVQError(f"{type(model).__name__} is not a brainvq prior; build one with build_prior "
                           "or load prior.keras after `import brainvq_utils`")
    return dict(arch=model.arch, num_codes=model.num_codes, grid=tuple(model.grid), channels=model.channels,
                num_layers=model.num_layers, kernel_size=model.kernel_size, embedding_dim=model.embedding_dim,
                num_positions=model.num_positions, num_classes=model.num_classes,
                location=model.location)
