"""The one check of image arrays that every public function taking images applies, and
``concrete_numpy``: the values of an array or eager tensor, to check (None for a traced one).

``as_images(x, name)`` returns float32 grey images (N, H, W, 1) in [0, 1], or stops with one line
that names the argument and says what to do. What it converts, and nothing else:

- ``uint8`` images are divided by 255 and ``uint16`` by 65535 (what an 8- or 16-bit file holds), so
  ``metrics.ssim(a_uint8, b_uint8)`` equals the SSIM of the same images scaled to [0, 1];
- one image (H, W) or (H, W, 1) becomes a batch of one, a batch (N, H, W) gains its channel axis;
- float values at most ``TOLERANCE`` outside [0, 1] (rounding in a resize or a decoder) are clipped.

What it refuses: NaN or infinite values, booleans (masks), other integer types (their scale is
unknown), floats outside [0, 1] (0-255 or -1..1 images), colour images, and a rank other than 2-4.
"""

from __future__ import annotations

import numpy as np

from .errors import BrainVQError

TOLERANCE = 1e-3
SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def as_images(x, name: str = "images", size=None) -> np.ndarray:
    """``x`` as float32 (N, H, W, 1) in [0, 1] (see the module's docstring); ``size``: the (H, W)
    the images must have, if any."""
    arr = np.asarray(x)
    if arr.dtype == object:
        raise BrainVQError(f"{name} is not an array of numbers (got {type(x).__name__}); pass grey images "
                           f"as an array (N, H, W, 1) in [0, 1]")
    if arr.dtype == bool:
        raise BrainVQError(f"{name} is a boolean array (a mask?); pass grey images in [0, 1]")
    if arr.dtype.kind in "iu":
        if arr.dtype not in SCALES:
            raise BrainVQError(f"{name} holds {arr.dtype} integers, whose scale is unknown; pass uint8 (0-255) "
                               f"or float images in [0, 1] (e.g. x / x.max())")
        arr = arr.astype(np.float32) / SCALES[arr.dtype]
    elif arr.dtype.kind != "f":
        raise BrainVQError(f"{name} has dtype {arr.dtype}; pass grey images as uint8 or floats in [0, 1]")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr[None, ..., None]
    elif arr.ndim == 3:
        arr = arr[None] if arr.shape[-1] == 1 else arr[..., None]
    if arr.ndim != 4:
        raise BrainVQError(f"{name} has shape {np.shape(x)}; pass grey images (N, H, W, 1), (N, H, W) or one (H, W)")
    if arr.shape[-1] != 1:
        raise BrainVQError(f"{name} has {arr.shape[-1]} channels (shape {arr.shape}); pass grey images "
                           f"(N, H, W, 1), e.g. the mean over the colour axis")
    if size is not None and tuple(arr.shape[1:3]) != tuple(size):
        raise BrainVQError(f"{name} are {arr.shape[1]}x{arr.shape[2]} pixels but {size[0]}x{size[1]} are needed; "
                           f"resize them first (data.SliceSplit.load(image_size) does)")
    if arr.size:
        finite = np.isfinite(arr)
        if not finite.all():
            raise BrainVQError(f"{name} holds {int((~finite).sum())} NaN or infinite value(s); check where the "
                               f"images came from (a decoder that diverged?)")
        low, high = float(arr.min()), float(arr.max())
        if low < -TOLERANCE or high > 1 + TOLERANCE:
            hint = "divide by 255" if high <= 255 and low >= 0 else "rescale them, e.g. (x - x.min()) / (x.max() - x.min())"
            raise BrainVQError(f"{name} range over [{low:.4g}, {high:.4g}] but brainvq takes images in [0, 1]; {hint}")
        if low < 0 or high > 1:
            arr = np.clip(arr, 0.0, 1.0)
    return arr


def concrete_numpy(x):
    """``x`` as a NumPy array when it holds values now (eager), else None (traced)."""
    if isinstance(x, (np.ndarray, np.generic, int, list, tuple)):
        return np.asarray(x)
    import keras

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
