"""The two-level prior: a small prior draws a coarse layout of the slice first, and the code prior draws
the codes given it (``arch="layout"``).

A raster-order PixelCNN must decide where the brain ends while it is still drawing the top rows, from
the few rows above and a location bias: its worst samples are half brains, slivers and fragments. Here
the decision comes first. The **layout** of a code map is a coarse map, one value per ``layout_cell`` x
``layout_cell`` block of codes: 0 where none of the block's codes is brain, 2 where all are, 1 between
(``layout_of``; a code is brain where it decodes brighter than the brain level, ``brain_codes``). It is
the extent and the outline of the brain at a sixteenth of the grid. The two stages:

- the **layout prior**: a small gated PixelCNN over the layout grid (8 x 8 for a 32 x 32 code map),
  conditioned on the slice level and class like the code prior; it sees the whole coarse grid after a
  few layers;
- the **code prior**: the gated PixelCNN of ``priors.gated`` with the layout as one more conditioning
  map (its embedding added, block by block, to the location biases of every gate).

The code prior draws only codes that agree with the layout (``layout_bias``): no brain code in a block
the layout leaves empty, only brain codes in a block it fills; so the brain's extent follows the layout
at the block's resolution, and the code prior fills in what lies inside. Training fits both stages at once
on the real maps (the code prior is given the real layout: teacher forcing of the first stage); the loss
is the codes' cross-entropy plus the layout's, weighted by its share of positions, so that the sum is the
pair's code length per code. Sampling draws a layout, then codes given it (``sampling.sample``), each stage
by the exact fast or the reference sampler. In the spirit of
VQ-VAE-2's top-level prior (Razavi et al. 2019), with a layout that is read off the codes instead of
learned.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..devices import replica_share
from ..errors import BrainVQError
from .base import PACKAGE, Prior
from .gated import GatedPixelCNNPrior

LAYOUT_LEVELS = 3      # no brain, some brain, all brain
FORBIDDEN = -1e9       # the logit bias of a code that the layout does not allow where it is


@keras.saving.register_keras_serializable(package=PACKAGE)
class TwoLevelPrior(Prior):
    """A layout prior and a code prior given the layout (see the module's docstring)."""

    arch = "layout"
    hyperparameters = ("channels", "num_layers", "kernel_size", "location", "level_location", "layout_cell",
                       "layout_channels", "layout_layers", "brain_codes")

    def __init__(self, channels=64, num_layers=8, kernel_size=3, location=True, level_location=False, layout_cell=4,
                 layout_channels=32, layout_layers=4, brain_codes=None, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_layers, self.kernel_size = int(channels), int(num_layers), int(kernel_size)
        self.location, self.level_location = bool(location), bool(level_location)
        self.layout_cell, self.layout_channels, self.layout_layers = int(layout_cell), int(layout_channels), int(layout_layers)
        if brain_codes is None or len(brain_codes) != self.num_codes:
            raise BrainVQError(f"the two-level prior needs brain_codes: for each of the {self.num_codes} codes whether it "
                               f"decodes to brain (pipeline.brain_codes(vqvae, code_maps))")
        self.brain_codes = [int(bool(b)) for b in brain_codes]
        h, w = self.grid
        if h % self.layout_cell or w % self.layout_cell:
            raise BrainVQError(f"layout_cell={self.layout_cell} does not divide the {self.grid} code grid; use a "
                               f"divisor of {h} and {w}, e.g. 4")
        policy, common = self.dtype_policy, dict(num_positions=self.num_positions, num_classes=self.num_classes)
        seed = None if self.seed is None else int(self.seed)
        self.layout_prior = GatedPixelCNNPrior(
            num_codes=LAYOUT_LEVELS, grid=(h // self.layout_cell, w // self.layout_cell), channels=self.layout_channels,
            num_layers=self.layout_layers, kernel_size=3, location=True, level_location=False,
            seed=None if seed is None else seed + 1, name="layout_prior", dtype=policy, **common)
        self.code_prior = GatedPixelCNNPrior(
            num_codes=self.num_codes, grid=self.grid, channels=self.channels, num_layers=self.num_layers,
            kernel_size=self.kernel_size, location=self.location,
            level_location=self.level_location and self.location and bool(self.num_positions),
            layout_levels=LAYOUT_LEVELS, layout_cell=self.layout_cell, seed=seed, name="code_prior", dtype=policy,
            **common)
        self._brain = ops.convert_to_tensor(np.asarray(self.brain_codes, "float32"))
        self.built = True

    def layout_of(self, codes):
        """The coarse layout (B, h/cell, w/cell) int32 of code maps (B, h, w): per block of codes, 0 with no
        brain code, 2 with only brain codes, 1 with both."""
        codes = ops.cast(codes, "int32")
        brain = ops.take(self._brain, codes, axis=0)
        b, (h, w), c = ops.shape(codes)[0], self.grid, self.layout_cell
        share = ops.mean(ops.reshape(brain, (b, h // c, c, w // c, c)), axis=(2, 4))
        return ops.cast(ops.where(share <= 0.0, 0, ops.where(share >= 1.0, 2, 1)), "int32")

    def _stage_inputs(self, inputs):
        codes, position, label = self._unpack(inputs)
        extra = {k: v for k, v in (("position", position), ("label", label)) if v is not None}
        layout = inputs.get("layout") if isinstance(inputs, dict) else None
        return codes, (self.layout_of(codes) if layout is None else ops.cast(layout, "int32")), extra

    def layout_bias(self, layout):
        """(B, h, w, K) float32 to add to the code logits: 0 for the codes a layout allows at each position,
        ``FORBIDDEN`` for the others: in a block without brain only codes that are not brain, in a block of
        all brain only brain codes, in a mixed block any. The code prior draws from its distribution
        restricted to the codes consistent with the layout (the layout is a function of the codes, so the
        real codes always are)."""
        layout = ops.cast(layout, "int32")
        c = self.layout_cell
        cells = ops.repeat(ops.repeat(layout, c, axis=1), c, axis=2)[..., None]          # (B, h, w, 1)
        brain = self._brain[None, None, None, :]                                         # (1, 1, 1, K)
        forbidden = ops.logical_or(ops.logical_and(cells == 0, brain > 0.5), ops.logical_and(cells == 2, brain < 0.5))
        return ops.where(forbidden, FORBIDDEN, 0.0)

    def call(self, inputs, training=False):
        """The code prior's logits (B, h, w, K), given the layout in ``inputs["layout"]`` or, without it,
        the layout of the codes themselves (what training uses), restricted to the codes the layout allows
        (``layout_bias``)."""
        codes, layout, extra = self._stage_inputs(inputs)
        logits = self.code_prior({"codes": codes, "layout": layout, **extra}, training=training)
        return ops.cast(logits, "float32") + self.layout_bias(layout)

    def layout_logits(self, inputs, training=False):
        """The layout prior's logits (B, h/cell, w/cell, 3) for the layouts of the given code maps."""
        _, layout, extra = self._stage_inputs(inputs)
        return self.layout_prior({"codes": layout, **extra}, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The codes' cross-entropy given the real layout, plus the layout's cross-entropy weighted by its
        share of positions (1 / cell^2): together, the code length of the pair per code."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        _, layout, _ = self._stage_inputs(x)
        logits = ops.cast(self.layout_logits(x, training=training), "float32")
        layout_ce = ops.mean(keras.losses.sparse_categorical_crossentropy(layout, logits, from_logits=True))
        return loss + replica_share(layout_ce / float(self.layout_cell ** 2))

    def code_bits(self, inputs):
        """Bits of every code given the real layout, plus the layout's own bits spread over its block's
        codes: (B, h, w) bits whose sum is the pair's code length, and whether the most likely code
        (given the layout) was the true one."""
        codes = np.asarray(inputs["codes"])
        from .base import _bits_and_hits
        bits, hits = _bits_and_hits(ops.convert_to_numpy(self(inputs, training=False)).astype(np.float64), codes)
        layout = ops.convert_to_numpy(self.layout_of(codes))
        layout_bits, _ = _bits_and_hits(ops.convert_to_numpy(self.layout_logits(inputs)).astype(np.float64), layout)
        c = self.layout_cell
        spread = np.repeat(np.repeat(layout_bits, c, axis=1), c, axis=2) / (c * c)
        return bits + spread, hits
