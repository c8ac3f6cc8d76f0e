"""Priors over VQ-VAE code maps: one file per architecture, one registry.

Every prior is a Keras model that takes ``{"codes": (B, h, w) int32, "position": (B,) int32,
"label": (B,) int32}`` (the conditioning entries only when built with them) and returns logits
(B, h, w, K); it scores maps with ``code_bits`` and says how it samples (``prior_info``):

============  =====================================================  ==========================
name          model                                                  sampling
============  =====================================================  ==========================
``layout``    a layout prior, then a gated PixelCNN given the layout  two autoregressive stages
``maskgit``   bidirectional masked-token transformer (MaskGIT, 2022)  iterative parallel decoding
``gated``     gated PixelCNN with conditioning (van den Oord, 2016)   autoregressive, exact fast
``pixelcnn``  masked PixelCNN, the keras.io baseline (2016)           autoregressive, exact fast
============  =====================================================  ==========================

Notebooks and benchmarks build priors by name (``build_prior``) and never branch on it. Their training
data (code maps as input dicts, ``tf.data`` batches, MaskGIT's masking) is in ``priors.data``.
"""

from __future__ import annotations

from ..errors import BrainVQError
from .base import AutoregressivePrior, Prior, float32_copy, prior_info
from .data import code_dataset, mask_codes, masked_code_dataset, prior_inputs
from .gated import GatedLayer, GatedPixelCNNPrior, horizontal_step, vertical_row
from .layout import TwoLevelPrior
from .maskgit import MaskGITPrior, masked_counts
from .pixelcnn import MaskedConv2D, PixelCNNPrior, causal_mask

REGISTRY: dict[str, type[Prior]] = {"layout": TwoLevelPrior, "maskgit": MaskGITPrior, "gated": GatedPixelCNNPrior,
                                     "pixelcnn": PixelCNNPrior}
ARCHITECTURES = tuple(REGISTRY)

__all__ = ["ARCHITECTURES", "REGISTRY", "AutoregressivePrior", "GatedLayer", "GatedPixelCNNPrior", "MaskGITPrior",
           "MaskedConv2D", "PixelCNNPrior", "Prior", "TwoLevelPrior", "build_prior", "causal_mask", "code_dataset", "float32_copy",
           "get", "horizontal_step", "mask_codes", "masked_code_dataset", "masked_counts", "prior_info",
           "prior_inputs", "vertical_row"]


def get(arch: str) -> type[Prior]:
    """The prior class registered under ``arch``."""
    if arch not in REGISTRY:
        raise BrainVQError(f"prior architecture {arch!r} is not known; use one of {ARCHITECTURES}")
    return REGISTRY[arch]


def build_prior(arch="gated", num_codes=512, grid=(32, 32), *, num_positions=0, num_classes=0, seed=0,
                dtype=None, **hyperparameters) -> Prior:
    """A prior over (h, w) maps of ``num_codes`` codes.

    Args:
        arch: a name in ``ARCHITECTURES`` (table above).
        num_codes: codebook size K (the logits' last axis).
        grid: (h, w) of the code maps (an int for a square grid).
        num_positions: slice positions S to condition on (0: none).
        num_classes: class labels to condition on (0: none).
        seed: seed of the initial weights.
        dtype: Keras dtype policy, e.g. ``"mixed_bfloat16"`` to train in bfloat16 with float32
            weights (the logits stay float32); None: the global policy (float32 by default).
            ``float32_copy`` turns a trained mixed-precision prior into a float32 one.
        **hyperparameters: the architecture's own settings, ``get(arch).hyperparameters``:
            gated / pixelcnn: ``channels``, ``num_layers`` (gated layers, or residual blocks of
            the baseline), ``kernel_size``, ``embedding_dim`` (gated), ``location`` (gated:
            condition every layer on a learned embedding of the grid position);
            maskgit: ``channels`` (token width), ``num_layers`` (transformer blocks), ``heads``,
            ``patch`` (codes per token side); layout: the code prior's ``channels``, ``num_layers``,
            ``kernel_size``, ``location``, ``level_location``, and ``layout_cell`` (codes per layout
            block side), ``layout_channels``, ``layout_layers``, ``brain_codes`` (which codes are brain).
    """
    cls = get(arch)
    grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if len(grid) != 2 or min(grid) < 1:
        raise BrainVQError(f"prior grid {grid} must be two positive sizes (h, w), e.g. (32, 32)")
    if int(num_codes) < 2:
        raise BrainVQError(f"num_codes {num_codes} must be at least 2 (the VQ-VAE's codebook size)")
    for key, value in (("num_positions", num_positions), ("num_classes", num_classes)):
        if int(value or 0) < 0 or int(value or 0) == 1:
            raise BrainVQError(f"{key}={value}: use 0 for no conditioning or at least 2 values")
    unknown = set(hyperparameters) - set(cls.hyperparameters)
    if unknown:
        raise BrainVQError(f"the {arch!r} prior has no setting {sorted(unknown)}; its settings are "
                           f"{list(cls.hyperparameters)}")
    if int(hyperparameters.get("channels", 1)) < 1 or \
            int(hyperparameters.get("num_layers", 1)) < (0 if arch == "pixelcnn" else 1):
        raise BrainVQError(f"channels {hyperparameters.get('channels')} and num_layers "
                           f"{hyperparameters.get('num_layers')} must be positive")
    return cls(num_codes=num_codes, grid=grid, num_positions=num_positions, num_classes=num_classes, seed=seed,
               name=f"{arch}_prior", dtype=dtype, **hyperparameters)
