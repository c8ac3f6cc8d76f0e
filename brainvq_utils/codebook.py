"""Looking inside a trained codebook: code maps of a split, a 2-D projection, single codes."""

from __future__ import annotations

import keras
import numpy as np


def encode_split(model, split, image_size, batch_size: int = 64) -> np.ndarray:
    """Code maps (N, h, w) int32 of every image of a split, in split order (streamed)."""
    maps = [keras.ops.convert_to_numpy(model.encode(np.asarray(x)))
            for x in split.dataset(image_size, batch_size)]
    return np.concatenate(maps).astype(np.int32)


def project_2d(model) -> tuple[np.ndarray, np.ndarray]:
    """The codebook's first two principal components: (K, 2) points, explained variance shares."""
    vectors = keras.ops.convert_to_numpy(model.quantizer.codebook).astype(np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / max((s**2).sum(), 1e-12)
    return centred @ vt[:2].T, share[:2]


def single_code_images(model, codes, background: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoded maps that are all one code, and maps of ``background`` with one code in the middle."""
    h, w = model.latent_grid
    codes = np.asarray(codes, dtype=np.int32)
    filled = np.broadcast_to(codes[:, None, None], (len(codes), h, w)).copy()
    placed = np.full((len(codes), h, w), background, np.int32)
    placed[:, h // 2, w // 2] = codes
    decode = lambda m: keras.ops.convert_to_numpy(model.decode(m))
    return decode(filled), decode(placed)
