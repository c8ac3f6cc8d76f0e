"""A bidirectional masked-token transformer prior (``arch="maskgit"``).

Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer". Training hides a random
share of a code map's codes behind a mask token, the share drawn from the cosine schedule
``gamma(r) = cos(pi r / 2)`` with ``r ~ U(0, 1)`` (the paper's section 3.2), and teaches a
transformer that sees the whole map at once to predict the hidden codes from the visible
ones: a cross-entropy over the masked positions only. Generation starts from a fully masked
map and fills it in ``T`` parallel steps (section 3.3): at step t every masked position draws
a code from the predicted distribution; the most confident draws are kept, and the rest are
masked again so that ``N * gamma((t + 1) / T)`` positions stay masked. The choice of which to
keep is randomised by Gumbel noise on the log-confidences, annealed from ``choice_temperature``
to zero over the steps. The sampler lives in :mod:`brainvq_utils.sampling`.

Here the codes enter through an embedding (with one extra row for the mask token), each
``patch x patch`` block of codes becomes one token (a linear map of their concatenated
embeddings), a learned embedding tells each token where on the grid it lies, and the slice
position and class embeddings are added to every token. Pre-norm transformer blocks follow
(multi-head self-attention, then a GELU MLP), and a linear head gives every code of the
block its K logits. Nothing is causal: every token attends to every other.

Trade-offs against its siblings: it sees the whole map from the first layer, so the global
anatomy is learnt, not only imposed by a bias, and it samples in ``T`` passes instead of
``h * w`` steps; but its likelihood is not exact. ``code_bits`` scores a map by revealing it
in ``T`` groups of a fixed random order, each group predicted from the ones before: a valid
code length (an upper bound on what the prior needs), not comparable bit for bit with the
exact autoregressive likelihood of the PixelCNNs.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from ..errors import BrainVQError
from .base import PACKAGE, Prior, _bits_and_hits, _glorot


def cosine_schedule(ratio):
    """gamma(r) = cos(pi r / 2): the share of codes still masked after a share r of the work."""
    return np.cos(0.5 * np.pi * np.asarray(ratio, dtype=np.float64))


def masked_counts(total: int, steps: int) -> list[int]:
    """How many of ``total`` codes are still masked after each of ``steps`` decoding steps:
    ``floor(total * gamma((t + 1) / steps))``, at least one fewer every step, 0 at the end."""
    total, steps = int(total), int(steps)
    if not 1 <= steps <= total:
        raise BrainVQError(f"decoding steps={steps} must lie in 1..{total} (the codes in the grid), e.g. 12")
    counts, left = [], total
    for t in range(steps):
        n = int(math.floor(total * float(cosine_schedule((t + 1) / steps))))
        n = max(min(n, left - 1), steps - 1 - t)   # reveal one at least, and leave one for each later step
        counts.append(n)
        left = n
    return counts


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(layers.Layer):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU."""

    def __init__(self, channels, heads=4, mlp_ratio=4, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(channels) % int(heads):
            raise BrainVQError(f"maskgit channels={channels} must be divisible by heads={heads}")
        self.channels, self.heads, self.mlp_ratio, self.seed = int(channels), int(heads), int(mlp_ratio), seed
        policy = self.dtype_policy
        self.norm1 = layers.LayerNormalization(epsilon=1e-5, name="norm1", dtype=policy)
        self.attention = layers.MultiHeadAttention(self.heads, self.channels // self.heads,
                                                   kernel_initializer=_glorot(seed, 0), name="attention",
                                                   dtype=policy)
        self.norm2 = layers.LayerNormalization(epsilon=1e-5, name="norm2", dtype=policy)
        self.mlp1 = layers.Dense(self.mlp_ratio * self.channels, activation="gelu",
                                 kernel_initializer=_glorot(seed, 1), name="mlp1", dtype=policy)
        self.mlp2 = layers.Dense(self.channels, kernel_initializer=_glorot(seed, 2), name="mlp2", dtype=policy)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.mlp1.build(input_shape)
        self.mlp2.build((*input_shape[:-1], self.mlp_ratio * self.channels))
        super().build(input_shape)

    def call(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y)
        return x + self.mlp2(self.mlp1(self.norm2(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, heads=self.heads, mlp_ratio=self.mlp_ratio, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskGITPrior(Prior):
    """Bidirectional transformer over (h, w) code maps in which code index K is the mask."""

    arch = "maskgit"
    sampling = "iterative"
    mask_token = True
    hyperparameters = ("channels", "num_layers", "heads", "patch")

    def __init__(self, channels=128, num_layers=4, heads=4, patch=2, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_layers, self.heads, self.patch = int(channels), int(num_layers), int(heads), int(patch)
        h, w = self.grid
        if self.patch < 1 or h % self.patch or w % self.patch:
            raise BrainVQError(f"maskgit patch={patch} must divide the code grid {self.grid}; use 1 or 2")
        if self.channels < 1 or self.num_layers < 1 or self.heads < 1:
            raise BrainVQError(f"maskgit channels={channels}, num_layers={num_layers}, heads={heads} must be positive")
        s, c, policy, p = self.seed, self.channels, self.dtype_policy, self.patch
        sub = (lambda i: None if s is None else int(s) * 101 + i)
        normal = (lambda i, std: keras.initializers.TruncatedNormal(0.0, std, seed=sub(i)))
        self.tokens = (h // p, w // p)
        n_tokens = self.tokens[0] * self.tokens[1]
        self.code_embedding = layers.Embedding(self.num_codes + 1, c, embeddings_initializer=normal(0, 0.02),
                                               name="code_embedding", dtype=policy)
        self.patch_in = layers.Dense(c, kernel_initializer=_glorot(sub(1), 0), name="patch_in", dtype=policy)
        self.token_position = self.add_weight(shape=(n_tokens, c), initializer=normal(2, 0.02),
                                              name="token_position")
        self.position_embedding = (layers.Embedding(self.num_positions, c, embeddings_initializer=normal(3, 0.02),
                                                    name="position_embedding", dtype=policy)
                                   if self.num_positions else None)
        self.label_embedding = (layers.Embedding(self.num_classes, c, embeddings_initializer=normal(4, 0.02),
                                                 name="label_embedding", dtype=policy) if self.num_classes else None)
        self.blocks = [TransformerBlock(c, self.heads, seed=sub(10 + i), name=f"block{i}", dtype=policy)
                       for i in range(self.num_layers)]
        self.norm = layers.LayerNormalization(epsilon=1e-5, name="norm", dtype=policy)
        self.to_logits = layers.Dense(p * p * self.num_codes, kernel_initializer=_glorot(sub(60), 0),
                                      name="to_logits", dtype=self.logits_dtype)
        self.code_embedding.build((None, h, w))
        for emb in (self.position_embedding, self.label_embedding):
            if emb is not None:
                emb.build((None,))
        self.patch_in.build((None, n_tokens, p * p * c))
        for block in self.blocks:
            block.build((None, n_tokens, c))
        self.norm.build((None, n_tokens, c))
        self.to_logits.build((None, n_tokens, c))
        self.built = True

    def _to_tokens(self, x):
        """(B, h, w, C) -> (B, T, p*p*C): each patch x patch block of the grid as one token."""
        (th, tw), p, c = self.tokens, self.patch, x.shape[-1]
        x = ops.reshape(x, (-1, th, p, tw, p, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, th * tw, p * p * c))

    def _from_tokens(self, x):
        """(B, T, p*p*K) -> (B, h, w, K)."""
        (th, tw), p, k = self.tokens, self.patch, self.num_codes
        x = ops.reshape(x, (-1, th, tw, p, p, k))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, th * p, tw * p, k))

    def call(self, inputs, training=False):
        codes, position, label = self._unpack(inputs)
        x = self.patch_in(self._to_tokens(self.code_embedding(codes)))
        x = x + ops.cast(self.token_position, x.dtype)[None]
        if self.position_embedding is not None:
            x = x + self.position_embedding(position)[:, None, :]
        if self.label_embedding is not None:
            x = x + self.label_embedding(label)[:, None, :]
        for block in self.blocks:
            x = block(x)
        return self._from_tokens(self.to_logits(self.norm(x)))

    def code_bits(self, inputs, steps: int = 12, seed: int = 0):
        """Bits and hits (see ``Prior.code_bits``) of every code when each map is revealed in
        ``steps`` groups of one fixed random order (``seed``; group sizes from the cosine
        schedule), each group predicted from the groups before it with the rest masked. The
        product of those probabilities sums to one over all maps (tests/test_prior.py), so
        the bits are a code length."""
        codes = np.asarray(inputs["codes"], np.int32)
        b, (h, w) = len(codes), self.grid
        total = h * w
        steps = min(int(steps), total)
        order = np.argsort(np.random.default_rng(seed).random(total))   # one reveal order for every map
        rank = np.empty(total, np.int64)
        rank[order] = np.arange(total)
        rank = np.broadcast_to(rank.reshape(1, h, w), (b, h, w))
        revealed = np.concatenate([[0], total - np.asarray(masked_counts(total, steps))])
        bits, hits = np.zeros((b, h, w)), np.zeros((b, h, w), bool)
        for t in range(steps):
            known = rank < revealed[t]
            group = (rank >= revealed[t]) & (rank < revealed[t + 1])
            step_inputs = dict(inputs, codes=np.where(known, codes, self.num_codes).astype(np.int32))
            logits = ops.convert_to_numpy(self(step_inputs, training=False)).astype(np.float64)
            step_bits, step_hits = _bits_and_hits(logits, codes)
            bits[group], hits[group] = step_bits[group], step_hits[group]
        return bits, hits
