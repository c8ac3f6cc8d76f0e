"""The priors' training data: code maps with their conditioning as the input dict every prior takes,
``tf.data`` batches of them, and the masking that trains a masked-token prior (MaskGIT).
"""

from __future__ import annotations

import math

import numpy as np


def tf_nest_first(batch):
    """The first tensor of a (nested) batch."""
    import tensorflow as tf
    return tf.nest.flatten(batch)[0]


def prior_inputs(codes, positions=None, labels=None) -> dict:
    """The prior's input dict; conditioning entries only when given."""
    inputs = {"codes": np.asarray(codes, np.int32)}
    if positions is not None:
        inputs["position"] = np.asarray(positions, np.int32)
    if labels is not None:
        inputs["label"] = np.asarray(labels, np.int32)
    return inputs


def code_dataset(inputs: dict, batch_size: int, shuffle: bool = False, seed: int = 0):
    """(inputs, codes) batches for fitting a prior on code maps."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((inputs, inputs["codes"]))
    if shuffle:
        ds = ds.shuffle(min(len(inputs["codes"]), 10_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def mask_codes(codes, mask_token: int, seed):
    """Hide a random share of each map's codes behind ``mask_token`` (MaskGIT's training):
    the share is ``cos(pi r / 2)`` with ``r ~ U(0, 1)`` per map, at least one code, and the
    hidden positions are uniform. ``seed`` is a stateless seed (2 ints). Returns the masked
    codes and the loss weights: zero where shown, ``h*w / hidden`` where hidden, so that the
    mean over a batch of weighted cross-entropies is the mean over maps of each map's mean over
    its hidden codes (a per-map average, which a batch split across devices does not change;
    a weighted mean over the batch's hidden codes would be taken per device)."""
    import tensorflow as tf

    shape = tf.shape(codes)
    batch, total = shape[0], shape[1] * shape[2]
    ratio = tf.random.stateless_uniform([batch], seed=seed)
    hidden = tf.cast(tf.math.ceil(tf.cos(0.5 * math.pi * ratio) * tf.cast(total, tf.float32)), tf.int32)
    hidden = tf.clip_by_value(hidden, 1, total)
    scores = tf.random.stateless_uniform([batch, total], seed=seed + tf.constant([0, 1], seed.dtype))
    ranks = tf.argsort(tf.argsort(scores, axis=1), axis=1)          # a random permutation per map
    mask = tf.reshape(ranks < hidden[:, None], shape)
    scale = tf.cast(total, tf.float32) / tf.cast(hidden, tf.float32)
    weights = tf.cast(mask, tf.float32) * tf.reshape(scale, [-1, 1, 1])
    return tf.where(mask, tf.cast(mask_token, codes.dtype), codes), weights


def masked_code_dataset(ds, mask_token: int, seed: int = 0, rerandomize: bool = True):
    """(inputs, codes) batches -> (inputs with masked codes, codes, weights): the training data
    of a masked-token prior, new masks every pass over the data (seeded; ``rerandomize=False``:
    the same masks every pass), loss on the hidden codes only. Each map gets its own draw
    before the maps are batched again, so the masks do not depend on how a batch is split
    across devices (MirroredStrategy re-batches the pipeline)."""
    import tensorflow as tf

    first = next(iter(ds), None)      # the batch size, to batch the masked maps again
    batch = int(tf_nest_first(first).shape[0]) if first is not None else 1

    def apply(pair, draw):
        inputs, codes = pair
        masked, weights = mask_codes(codes[None], mask_token, tf.stack([tf.constant(seed, tf.int64), draw]))
        return {**inputs, "codes": masked[0]}, codes, weights[0]

    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize)
    masked = tf.data.Dataset.zip((ds.unbatch(), draws)).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    masked = masked.batch(batch)
    if ds.cardinality() >= 0:   # the same batches as ``ds``; said, so that Keras knows an epoch's length
        masked = masked.apply(tf.data.experimental.assert_cardinality(ds.cardinality()))
    return masked.prefetch(tf.data.AUTOTUNE)
