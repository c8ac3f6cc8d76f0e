"""The ``tf.data`` input pipeline: decode a split's files, resize and pad them, cache, shuffle, batch.

``batches(split, image_size, ...)`` (what ``SliceSplit.dataset`` returns) starts from the list of
file names, decodes each image in a parallel ``map`` to one grey channel in [0, 1], resizes it
keeping its aspect ratio and pads it to the target size, and keeps decoded images only in a memory
cache when the split at the target size is below 256 MiB; a larger split is decoded again every
epoch (faster than a cache file on this CPU, and flat in memory: ``resolve_cache``). NIfTI volumes
are read one at a time by a generator (``read_volume``). So an ADNI-size split (~30,000 slices,
~7.5 GiB as 256x256 floats) never has to fit in RAM.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BrainVQError

# Memory bounds that keep an ADNI-size split (~30,000 slices) within a few hundred MiB of pixels
# (`brainvq bench data`): a split is cached in memory below CACHE_IN_MEMORY_BELOW (the demo's
# 2,560 training slices at 128x128 take 160 MiB) and streamed from its files above it; a shuffle
# buffer of decoded images holds at most SHUFFLE_BUFFER_BYTES.
CACHE_IN_MEMORY_BELOW = 256 * 1024**2  # bytes of float32 pixels at the target size
SHUFFLE_BUFFER_BYTES = 256 * 1024**2
_auto_cache_files: list[str] = []


def image_hw(image_size) -> tuple[int, int]:
    """``128`` or ``(128, 128)`` -> ``(H, W)``; a clear error for anything else."""
    hw = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    try:
        h, w = (int(v) for v in hw)
        ok = h > 0 and w > 0 and all(float(v) == int(v) for v in hw)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BrainVQError(f"image size {image_size!r} is not valid; use a positive int such as 128 "
                           f"or a pair (H, W)")
    return h, w


def check_image_size(image_size, factor: int) -> tuple[int, int]:
    """Return ``(H, W)``; raise when a side is not divisible by the VQ-VAE downsampling factor."""
    h, w = image_hw(image_size)
    for side in dict.fromkeys((h, w)):
        if side % factor:
            lower, upper = side - side % factor, side - side % factor + factor
            hint = f"{lower} or {upper}" if lower > 0 else f"{upper}"
            raise BrainVQError(f"image size {side} is not divisible by the VQ-VAE downsampling factor "
                               f"{factor}; use e.g. {hint}")
    return h, w


def resolve_cache(cache, n_images: int, image_size, threshold_bytes: int = CACHE_IN_MEMORY_BELOW,
                  cache_dir=None, tag: str = "split") -> str | None:
    """Where :meth:`SliceSplit.dataset` caches decoded images: ``"memory"``, a file prefix, or None.

    ``cache="auto"`` keeps the split in memory when ``n_images * H * W * 4`` bytes is below
    ``threshold_bytes``, and otherwise caches nothing: the files are decoded again every epoch,
    in a new order. On this 2-core CPU that is both faster and smaller than a cache file: one
    epoch of 21,568 ADNI-size training slices at 128x128 took 8.0 s at a peak of 814 MiB
    decoding, 11.5 s and 1,431 MiB writing a cache file (1,252 MiB at 7,232 slices: the file
    cache grows with the split). ``cache="file"`` writes a cache file under ``cache_dir``
    (default: the system temp folder), removed when Python exits; any other string is the
    cache file's own path.
    """
    if cache is None or cache is False:
        return None
    if cache == "memory":
        return "memory"
    if cache not in ("auto", "file"):
        Path(cache).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return str(Path(cache).expanduser())
    h, w = image_hw(image_size)
    if cache == "auto":
        return "memory" if n_images * h * w * 4 < threshold_bytes else None
    folder = Path(cache_dir or Path(tempfile.gettempdir()) / "brainvq-cache").expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    prefix = str(folder / f"{tag}-{h}x{w}-{os.getpid()}-{len(_auto_cache_files)}")
    _auto_cache_files.append(prefix)
    return prefix


@atexit.register
def _remove_auto_caches():
    for prefix in _auto_cache_files:
        for f in Path(prefix).parent.glob(Path(prefix).name + "*"):
            f.unlink(missing_ok=True)


def _decode(data):
    """Encoded PNG/JPEG bytes -> float32 (H, W, 1) in [0, 1]; 16-bit PNGs keep their depth."""
    import tensorflow as tf

    is_png16 = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 4), b"\x89PNG"),
                              tf.equal(tf.strings.substr(data, 24, 1), b"\x10"))
    return tf.cond(
        is_png16,
        lambda: tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16), tf.float32) / 65535.0,
        lambda: tf.cast(tf.io.decode_image(data, channels=1, expand_animations=False), tf.float32) / 255.0)


def _fit(image, hw):
    """Resize keeping the aspect ratio (antialiased bilinear), then zero-pad to exactly ``hw``."""
    import tensorflow as tf

    out = tf.image.resize_with_pad(image, hw[0], hw[1], method="bilinear", antialias=True)
    return tf.clip_by_value(tf.ensure_shape(out, (hw[0], hw[1], 1)), 0.0, 1.0)


class _BadVolume(ValueError):
    """A NIfTI file that nibabel reads but that is not a single 3-D volume."""


def _volume_header(path: str):
    """(nibabel image, number of axial slices once made canonical); reads no voxels."""
    import nibabel as nib

    img = nib.funcs.squeeze_image(nib.load(path))
    if len(img.shape) != 3:
        raise _BadVolume(f"is a {len(img.shape)}-D volume; expected a 3-D volume")
    axis = int(np.flatnonzero(nib.orientations.io_orientation(img.affine)[:, 0] == 2)[0])
    return img, int(img.shape[axis])


def read_volume(path: str) -> np.ndarray:
    """A NIfTI volume as uint8 (X, Y, Z) in RAS+ orientation (axial = last axis).

    Intensities are scaled to [0, 255] by the 0.5th and 99.5th percentiles of the non-zero voxels.
    """
    import nibabel as nib

    img, _ = _volume_header(path)
    data = np.nan_to_num(nib.as_closest_canonical(img).get_fdata(dtype=np.float32))
    foreground = data[data != 0]
    if foreground.size == 0:
        return np.zeros(data.shape, np.uint8)
    lo, hi = np.percentile(foreground, [0.5, 99.5])
    scaled = np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def axial_slice(volume: np.ndarray, z: int) -> np.ndarray:
    """Slice ``z`` of a canonical volume as (H, W, 1), anterior at the top."""
    return np.ascontiguousarray(np.rot90(volume[:, :, z]))[..., None]


def _split_nifti_name(name: str) -> tuple[str, int]:
    path, _, z = name.rpartition("#z=")
    return path, int(z)


def native(split, shuffle_seed=None):
    """tf.data of float32 (H, W, 1) images at their native size, in split order."""
    import tensorflow as tf

    if split.is_nifti:
        def slices():
            path, volume = None, None
            for name in split.files:  # volumes are read one at a time
                p, z = _split_nifti_name(name)
                if p != path:
                    path, volume = p, read_volume(p)
                yield axial_slice(volume, z)

        ds = tf.data.Dataset.from_generator(
            slices, output_signature=tf.TensorSpec((None, None, 1), tf.uint8))
        return ds.map(lambda x: tf.cast(x, tf.float32) / 255.0)
    ds = tf.data.Dataset.from_tensor_slices(list(split.files))
    if shuffle_seed is not None:  # shuffling names is free: no decoded images are buffered
        ds = ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.map(lambda f: _decode(tf.io.read_file(f)), num_parallel_calls=tf.data.AUTOTUNE)


def batches(split, image_size, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
            cache="auto", repeat: bool = False, with_targets: bool = False,
            drop_remainder: bool = False, factor: int | None = None,
            cache_threshold_bytes: int = CACHE_IN_MEMORY_BELOW, cache_dir=None):
    """A streaming ``tf.data.Dataset`` of batches (B, H, W, 1) float32 in [0, 1].

    Each image is decoded to one grey channel (RGB/RGBA become grey, 16-bit PNGs are scaled
    by 65535), resized keeping its aspect ratio and zero-padded to ``image_size``; 256x240
    ADNI slices become 256x256 with 8 rows of padding top and bottom. Then: ``cache``
    (``"auto"``, ``"memory"``, ``"file"``, a file path, or None; see :func:`resolve_cache`), ``shuffle``
    (seeded, reshuffled every epoch), ``repeat``, ``batch``, ``prefetch``. Without a cache,
    the file names are shuffled before decoding; with one, decoded images are shuffled
    through a buffer of ``min(len, 10000)`` images capped at 256 MiB. ``with_targets=True``
    yields ``(x, x)`` pairs for an autoencoder. ``factor`` checks divisibility of the size.
    """
    import tensorflow as tf

    hw = check_image_size(image_size, factor) if factor else image_hw(image_size)
    if not len(split):
        raise BrainVQError(f"the {split.name} split is empty; lower the fractions or add images")
    target = resolve_cache(cache, len(split), hw, cache_threshold_bytes, cache_dir, split.name)
    shuffle_names = shuffle and target is None and not split.is_nifti
    ds = native(split, seed if shuffle_names else None)
    ds = ds.map(lambda x: _fit(x, hw), num_parallel_calls=tf.data.AUTOTUNE)
    if target is not None:
        ds = ds.cache("" if target == "memory" else target)
    if shuffle and not shuffle_names:
        buffer = max(1, min(len(split), 10_000, SHUFFLE_BUFFER_BYTES // (hw[0] * hw[1] * 4)))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if with_targets:
        ds = ds.map(lambda x: (x, x))
    return ds.prefetch(tf.data.AUTOTUNE)
