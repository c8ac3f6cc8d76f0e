"""Looking inside a trained codebook: code maps of a split, a 2-D projection, single codes."""

from __future__ import annotations

import keras
import numpy as np

from .errors import BrainVQError


def encode_split(model, split, image_size, batch_size: int = 16) -> np.ndarray:
    """Code maps (N, h, w) of every image of a split, in split order, streamed: int16 for a
    codebook of up to 32,767 codes, which halves what an ADNI-size split's maps hold in memory
    and in ``codes.npz``, int32 above that. Batches of 16 keep the encoder's transient
    activations small (``brainvq bench data``: the peak at 30,016 slices fell from 1.12 to
    0.93 GiB)."""
    out, start = None, 0
    for x in split.dataset(image_size, batch_size, cache=None):   # one pass: nothing to cache
        maps = keras.ops.convert_to_numpy(model.encode(np.asarray(x)))
        if out is None:      # filled in place: the codes of a split are held once, never copied
            out = np.empty((len(split), *maps.shape[1:]), np.int16 if model.num_codes <= 2**15 - 1 else np.int32)
        out[start:start + len(maps)] = maps
        start += len(maps)
    if out is None:
        raise BrainVQError(f"the {split.name} split has no images to encode")
    return out


def project_2d(model) -> tuple[np.ndarray, np.ndarray]:
    """The codebook's first two principal components: (K, 2) points, explained variance shares."""
    vectors = keras.ops.convert_to_numpy(model.quantizer.codebook).astype(np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / max((s**2).sum(), 1e-12)
    return centred @ vt[:2].T, share[:2]


def code_gallery(model, counts, n: int = 10, window: int = 8):
    """Often-used codes from dark to bright, each as two crops of ``window`` codes square.

    Returns ``(codes, background, texture, footprint)``: ``texture`` decodes a map filled
    with the code (the pattern it stands for), ``footprint`` decodes the code alone in the
    middle of a map of the background code (how far the decoder spreads it). Crops come
    from the middle of the map, away from the zero-padded border.
    """
    counts = np.asarray(counts)
    order = np.argsort(counts)[::-1]
    background = int(order[0])
    candidates = np.array([k for k in order[1:8 * n + 1] if counts[k] > 0], dtype=np.int32)
    h, w = model.latent_grid
    f = model.downsample
    window = min(window, h, w)
    rows = slice((h - window) // 2 * f, (h + window) // 2 * f)
    cols = slice((w - window) // 2 * f, (w + window) // 2 * f)
    decode = lambda m: keras.ops.convert_to_numpy(model.decode(m))[:, rows, cols]
    filled = decode(np.broadcast_to(candidates[:, None, None], (len(candidates), h, w)).copy())
    brightness = filled.mean(axis=(1, 2, 3))
    # evenly spaced in brightness, not in rank: most frequent codes are dark edge codes
    targets = np.linspace(brightness.min(), brightness.max(), min(n, len(candidates)))
    pick = []
    for t in targets:
        for i in np.argsort(np.abs(brightness - t)):
            if i not in pick:
                pick.append(int(i))
                break
    pick = np.array(sorted(pick, key=lambda i: brightness[i]))
    placed = np.full((len(pick), h, w), background, np.int32)
    placed[:, h // 2, w // 2] = candidates[pick]
    return candidates[pick], background, filled[pick], decode(placed)


def code_levels(model, code_maps, batch_size: int = 64) -> np.ndarray:
    """(K,) the mean grey level each code decodes to where it is used: real code maps are decoded and
    each code's patches (``downsample`` x ``downsample`` pixels) averaged. A code that no map uses
    gets the level of a map filled with it. Painting a code map with these levels turns arbitrary code
    numbers into a picture that reads like the slice (``diagram.code_map_picture``)."""
    code_maps = np.asarray(code_maps)
    k, f = model.num_codes, model.downsample
    sums, counts = np.zeros(k), np.zeros(k)
    for i in range(0, len(code_maps), batch_size):
        maps = code_maps[i:i + batch_size]
        images = keras.ops.convert_to_numpy(model.decode(maps))[..., 0]
        n, h, w = maps.shape
        patches = images.reshape(n, h, f, w, f).mean(axis=(2, 4))
        sums += np.bincount(maps.ravel(), weights=patches.ravel(), minlength=k)
        counts += np.bincount(maps.ravel(), minlength=k)
    levels = np.divide(sums, counts, out=np.zeros(k), where=counts > 0)
    unused = np.flatnonzero(counts == 0)
    if len(unused):
        h, w = model.latent_grid
        filled = keras.ops.convert_to_numpy(model.decode(np.broadcast_to(unused[:, None, None], (len(unused), h, w))))
        levels[unused] = filled.mean(axis=(1, 2, 3))
    return levels.astype(np.float32)
