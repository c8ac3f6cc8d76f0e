"""The gated PixelCNN with conditioning (``arch="gated"``).

van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders": a vertical
stack that sees whole rows above and a horizontal stack that sees the current row up to the
current position, joined by a 1x1 link from vertical to horizontal, so there is no blind spot.
Every layer computes ``tanh(W_f * x + V_f c) * sigmoid(W_g * x + V_g c)`` (the paper's eq. 4),
with ``c`` the embedding of the slice position and of the class label (a conditional bias per
layer) plus, with ``location=True``, a learned embedding of the grid position (i, j) itself: the
paper's location-dependent conditioning ``V * s`` with a 1x1 map ``s``. Registered slices share
their layout, so knowing where on the grid a code lies tells the prior where the brain's edge
and midline are. With ``level_location=True`` each slice position adds its own coarse map (one
vector per 4x4 block of codes), since where the brain lies depends on the level: a small disc
at the vertex, a wide oval through the ventricles. Neither depends on a code, so causality is
untouched.

The layers are written as full-grid convolutions for training (``call``) and as the same
arithmetic on one row (vertical stack) or one position (horizontal stack) for the exact fast
sampler in :mod:`brainvq_utils.sampling`; both read the same weights.

Trade-offs against its siblings: exact likelihood and no blind spot, conditioning, a fast
exact sampler; but it still draws one code at a time in raster order, and eight 3x3 layers
see only about eight rows above, so the global anatomy comes from the conditioning alone.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from ..errors import BrainVQError
from .base import PACKAGE, AutoregressivePrior, _glorot


def gate(x):
    """Gated activation tanh(a) * sigmoid(b) of the two halves of the last axis."""
    a, b = ops.split(x, 2, axis=-1)
    return ops.tanh(a) * ops.sigmoid(b)


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
        location: a (B, h, w, cond_dim) map added to it at every grid position, or None."""
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
            loc_v, loc_h = self.cond_biases(location, batch)
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


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedPixelCNNPrior(AutoregressivePrior):
    """The gated PixelCNN (vertical + horizontal stacks, no blind spot), optionally
    conditioned on slice position and class label."""

    arch = "gated"
    hyperparameters = AutoregressivePrior.hyperparameters + ("level_location", "layout_levels", "layout_cell")
    level_cell = 4   # a level's own location map has one value per 4x4 block of codes

    def __init__(self, level_location=False, layout_levels=0, layout_cell=4, **kwargs):
        super().__init__(**kwargs)
        self.level_location = bool(level_location)
        # A coarse layout map given with the codes (inputs["layout"], one of layout_levels values per
        # layout_cell x layout_cell block of codes): the two-level prior's code stage (priors.layout).
        self.layout_levels, self.layout_cell = int(layout_levels or 0), int(layout_cell)
        if self.layout_levels and (self.layout_levels < 2 or self.layout_cell < 1 or self.grid[0] % self.layout_cell
                                   or self.grid[1] % self.layout_cell):
            raise BrainVQError(f"a layout of {self.layout_levels} levels in blocks of {self.layout_cell} codes does not fit "
                               f"the {self.grid} code grid; use at least 2 levels and a block size that divides the grid")
        if self.level_location and not (self.location and self.num_positions):
            raise BrainVQError("level_location=True needs location=True and num_positions > 0: it refines the "
                               "location map for each slice position")
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
        # Where the brain lies depends on the slice level: a coarse location map per slice position.
        cells = (-(-h // self.level_cell), -(-w // self.level_cell))
        self.level_location_embedding = (
            self.add_weight(shape=(self.num_positions, *cells, c), name="level_location_embedding",
                            initializer=keras.initializers.RandomNormal(0.0, 0.1, seed=sub(4)))
            if self.level_location else None)
        self.layout_embedding = (layers.Embedding(self.layout_levels, c, embeddings_initializer=normal(5),
                                                  name="layout_embedding", dtype=policy) if self.layout_levels else None)
        if self.layout_embedding is not None:
            self.layout_embedding.build((None, h // self.layout_cell, w // self.layout_cell))
        cond_dim = c if (self.conditional or self.location or self.layout_levels) else 0
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

    def location_map(self, position, batch_size, layout=None):
        """The location conditioning, (B, h, w, C): the grid-location embedding, plus the coarse
        map of each sample's slice position (``level_location``) upsampled to the grid, plus the
        embedding of each sample's coarse layout (``layout_levels``: (B, h/cell, w/cell) ints, when
        given) upsampled to the grid; None without any of them."""
        h, w = self.grid
        parts = []
        if self.location_embedding is not None:
            loc = ops.cast(self.location_embedding, self.compute_dtype)[None]
            parts.append(ops.broadcast_to(loc, (batch_size, *loc.shape[1:])))
        if self.level_location_embedding is not None:
            level = ops.take(ops.cast(self.level_location_embedding, self.compute_dtype), position, axis=0)
            parts.append(ops.repeat(ops.repeat(level, self.level_cell, axis=1), self.level_cell, axis=2)[:, :h, :w])
        if self.layout_embedding is not None and layout is not None:
            cells = self.layout_embedding(ops.cast(layout, "int32"))
            parts.append(ops.repeat(ops.repeat(cells, self.layout_cell, axis=1), self.layout_cell, axis=2))
        if not parts:
            return None
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out

    def fast_cond_biases(self, position, label, batch_size, layout=None):
        """The conditional biases of the vertical and horizontal gates, each (L, B, 2C), and
        the location biases of the same gates, each (L, B, h, w, 2C) (zeros without location)."""
        cond = self.condition(position, label) if self.conditional else None
        biases = [layer.cond_biases(cond, batch_size) for layer in self.gated_layers]
        h, w = self.grid
        location = self.location_map(position, batch_size, layout)
        if location is None:
            loc_v = loc_h = ops.zeros((len(self.gated_layers), batch_size, h, w, 2 * self.channels))
        else:
            loc = [layer.cond_biases(location, batch_size) for layer in self.gated_layers]
            loc_v, loc_h = ops.stack([b[0] for b in loc]), ops.stack([b[1] for b in loc])
        return ops.stack([b[0] for b in biases]), ops.stack([b[1] for b in biases]), loc_v, loc_h

    def call(self, inputs, training=False):
        codes, position, label = self._unpack(inputs)
        layout = inputs.get("layout") if isinstance(inputs, dict) else None
        if self.layout_levels and layout is None:
            h, w = self.grid
            raise BrainVQError(f"this prior draws codes given a coarse layout: pass inputs['layout'] as "
                               f"(B, {h // self.layout_cell}, {w // self.layout_cell}) ints in [0, {self.layout_levels})")
        cond = self.condition(position, label)
        v = h = self.code_embedding(codes)
        location = self.location_map(position, ops.shape(codes)[0], layout)
        for layer in self.gated_layers:
            v, h = layer(v, h, cond, location)
        return self.head(h)
