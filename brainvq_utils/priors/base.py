"""What every prior shares: configuration, input checks, scoring, precision, ``prior_info``.

A prior takes a dict ``{"codes": (B, h, w) int32, "position": (B,) int32, "label": (B,) int32}``
(the conditioning entries only when built with them) and returns logits (B, h, w, K) over the
K codes of a VQ-VAE's codebook. The architectures live one per file beside this one and are
picked by name through the registry in ``brainvq_utils.priors``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..errors import BrainVQError
from ..images import concrete_numpy

PACKAGE = "brainvq"


def _glorot(seed, index):
    return keras.initializers.GlorotUniform(seed=None if seed is None else int(seed) * 1009 + index)


class Prior(keras.Model):
    """What every prior shares: the codes and grid it models, its conditioning, input checks,
    and how it scores code maps (``code_bits``).

    Subclasses set ``arch`` (the name in the registry), ``sampling`` (``"autoregressive"``:
    one code at a time, by :mod:`brainvq_utils.sampling`; ``"iterative"``: the prior's own
    ``iterative_decode``) and ``hyperparameters`` (the names of their own settings).
    """

    arch = None
    sampling = "autoregressive"
    hyperparameters: tuple = ()
    mask_token = False      # True: code index num_codes stands for "masked" in the input
    takes_conditioning = True   # False: built without slice-position or class conditioning, whatever the data know

    def __init__(self, num_codes=512, grid=(32, 32), num_positions=0, num_classes=0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_codes = int(num_codes)
        self.grid = tuple(int(s) for s in grid)
        self.num_positions = int(num_positions or 0)
        self.num_classes = int(num_classes or 0)
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
        config.update(num_codes=self.num_codes, grid=list(self.grid), num_positions=self.num_positions,
                      num_classes=self.num_classes, seed=self.seed,
                      **{name: getattr(self, name) for name in self.hyperparameters})
        return config

    def build_from_config(self, config):  # every weight is made in __init__
        pass

    def _unpack(self, inputs):
        """-> codes, position, label; checks shapes always and values when eager."""
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"codes", "position", "label", "layout"}
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
        values = concrete_numpy(codes)
        top = self.num_codes + int(self.mask_token)   # the mask token, where the prior has one
        if values is not None and values.size and (values.min() < 0 or values.max() >= top):
            raise BrainVQError(f"codes range over [{values.min()}, {values.max()}] but the prior has "
                               f"{self.num_codes} codes; pass indices in [0, {top})")
        for key, value, size in (("position", position, self.num_positions), ("label", label, self.num_classes)):
            if size and value is None:
                raise BrainVQError(f"this prior is conditioned on {key} (0..{size - 1}); "
                                   f"pass inputs['{key}'] as (B,) int32")
            if not size and value is not None:
                option = "num_positions" if key == "position" else "num_classes"
                raise BrainVQError(f"this prior was built without {key} conditioning; "
                                   f"drop inputs['{key}'] or build with {option} > 0")
            if value is not None:
                concrete = concrete_numpy(value)
                if concrete is not None and concrete.size and (concrete.min() < 0 or concrete.max() >= size):
                    raise BrainVQError(f"{key} values range over [{concrete.min()}, {concrete.max()}] "
                                       f"but the prior knows {size}; pass integers in [0, {size})")
        codes = ops.cast(codes, "int32")
        position = None if position is None else ops.cast(ops.reshape(position, (-1,)), "int32")
        label = None if label is None else ops.cast(ops.reshape(label, (-1,)), "int32")
        return codes, position, label

    def code_bits(self, inputs):
        """Bits -log2 p(c_i | ...) of every code of the given maps and whether the most likely
        code was the true one: two (B, h, w) NumPy arrays. Autoregressive priors read all of
        them off one pass (each position sees only the codes before it); see the subclasses."""
        codes = np.asarray(inputs["codes"] if isinstance(inputs, dict) else inputs)
        logits = ops.convert_to_numpy(self(inputs, training=False)).astype(np.float64)
        return _bits_and_hits(logits, codes)


def _bits_and_hits(logits, codes):
    """-log2 softmax(logits)[code] and argmax == code, per position."""
    top = logits.max(-1, keepdims=True)
    logz = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, codes[..., None].astype(np.int64), axis=-1)[..., 0]
    return (logz - picked) / np.log(2.0), logits.argmax(-1) == codes


class AutoregressivePrior(Prior):
    """The two PixelCNNs' shared settings: feature channels, layers, kernel size, code
    embedding size and grid-location conditioning."""

    hyperparameters = ("channels", "num_layers", "kernel_size", "embedding_dim", "location")

    def __init__(self, channels=64, num_layers=8, kernel_size=3, embedding_dim=None, location=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.num_layers = int(num_layers)
        self.kernel_size = int(kernel_size)
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.location = bool(location)


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
    """What a (possibly loaded) prior was built with: arch, sampling, num_codes, grid,
    num_positions, num_classes, and its own hyperparameters (e.g. channels, num_layers)."""
    if not isinstance(model, Prior):
        raise BrainVQError(f"{type(model).__name__} is not a brainvq prior; build one with build_prior "
                           "or load prior.keras after `import brainvq_utils`")
    return dict(arch=model.arch, sampling=model.sampling, num_codes=model.num_codes, grid=tuple(model.grid),
                num_positions=model.num_positions, num_classes=model.num_classes,
                **{name: getattr(model, name) for name in model.hyperparameters})
