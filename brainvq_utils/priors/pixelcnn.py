"""The masked PixelCNN, the baseline of the original reports (``arch="pixelcnn"``).

van den Oord et al. 2016, "Pixel Recurrent Neural Networks", as the keras.io VQ-VAE example
builds it: one-hot codes, a mask-A 7x7 convolution, residual blocks (1x1, mask-B kxk, 1x1),
two mask-B 1x1 convolutions and a 1x1 convolution to K logits, modelling a code map in raster
order, p(c) = prod_i p(c_i | c_<i). Masks keep every position blind to itself and to what
follows (mask A hides the centre, mask B shows it), so all positions train in one pass.

Trade-offs against its siblings: the simplest prior, exact likelihood (bits per code) and an
exact fast sampler, but its stacked masks leave a blind spot up and to the right of every
position, it takes no conditioning, and it sees only as far as its layers reach.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..errors import BrainVQError
from .base import PACKAGE, AutoregressivePrior, _glorot


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
class PixelCNNPrior(AutoregressivePrior):
    """The masked PixelCNN baseline (no conditioning). ``num_layers`` residual blocks."""

    takes_conditioning = False
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
