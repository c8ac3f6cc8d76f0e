"""The data layer: every supported layout of brain slices, read into the same objects.

``load_dataset(layout, root)`` returns a :class:`BrainDataset` with three :class:`SliceSplit`
objects (train, validate, test). A split holds only file names and per-image metadata; pixels are
read when a split is iterated. Layouts (see DESIGN.md, section Data):

* ``oasis``     ``keras_png_slices_{train,validate,test}/case_XXX_slice_N.nii.png`` (splits by case);
* ``adni``      ``AD_NC/{train,test}/{AD,NC}/PATIENT_SLICE.jpeg``; validation is carved out of train
  by patient id (seeded, stratified by label), never by slice;
* ``folder``    any folder of PNG/JPEG slices, split at random by file (seeded);
* ``nifti``     a folder of ``.nii``/``.nii.gz`` volumes, sliced axially, split by volume;
* ``synthetic`` the embedded MNI152-derived cohort, written in the oasis (or adni) layout with a
  ``cohort.json`` beside it (build it with ``brainvq synth DIR``).

Memory: :meth:`SliceSplit.dataset` streams. It starts from the list of file names, decodes each
image in a parallel ``map``, and keeps decoded images only in a memory cache when the split at
the target size is below 256 MiB; a larger split is decoded again every epoch (faster than a
cache file on this CPU, and flat in memory: ``resolve_cache``). NIfTI volumes are read one
at a time by a generator. So an ADNI-size split (~30,000 slices, ~7.5 GiB as 256x256 floats) never
has to fit in RAM; only :meth:`SliceSplit.load`, meant for small sets and figures, reads all
pixels into one array.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BrainVQError

LAYOUTS = ("auto", "oasis", "adni", "folder", "nifti", "synthetic")
SPLITS = ("train", "validate", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
OASIS_DIRS = tuple(f"keras_png_slices_{s}" for s in SPLITS)
# Memory bounds that keep an ADNI-size split (~30,000 slices) within a few hundred MiB of pixels
# (`brainvq bench data`): a split is cached in memory below CACHE_IN_MEMORY_BELOW (the demo's
# 2,560 training slices at 128x128 take 160 MiB) and streamed from its files above it; a shuffle
# buffer of decoded images holds at most SHUFFLE_BUFFER_BYTES.
CACHE_IN_MEMORY_BELOW = 256 * 1024**2  # bytes of float32 pixels at the target size
SHUFFLE_BUFFER_BYTES = 256 * 1024**2
IN_MEMORY_BELOW = 512 * 1024**2  # SliceSplit.images: a split larger than this is read a chunk at a time
_auto_cache_files: list[str] = []


# ----------------------------------------------------------------------------- sizes and caching
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


# ----------------------------------------------------------------------------- decoding
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


# ----------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class SliceSplit:
    """One split: file names and per-image metadata, no pixels in memory."""

    name: str
    files: tuple[str, ...]
    subjects: tuple[str, ...]
    slices: tuple[int, ...]
    labels: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def is_nifti(self) -> bool:
        return bool(self.files) and "#z=" in self.files[0]

    def metadata(self) -> list[dict]:
        """One dict per image: file, subject, slice, label, split."""
        return [dict(file=f, subject=s, slice=z, label=y, split=self.name)
                for f, s, z, y in zip(self.files, self.subjects, self.slices, self.labels)]

    def subset(self, indices) -> "SliceSplit":
        """The images at ``indices`` (in that order), as a split of the same name."""
        idx = [int(i) for i in indices]
        return replace(self, **{k: tuple(getattr(self, k)[i] for i in idx)
                                for k in ("files", "subjects", "slices", "labels")})

    def sample(self, n: int, seed: int = 0) -> "SliceSplit":
        """A seeded random sample of at most ``n`` images, kept in split order."""
        if n >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False)))

    def _native(self, shuffle_seed=None):
        """tf.data of float32 (H, W, 1) images at their native size, in split order."""
        import tensorflow as tf

        if self.is_nifti:
            def slices():
                path, volume = None, None
                for name in self.files:  # volumes are read one at a time
                    p, z = _split_nifti_name(name)
                    if p != path:
                        path, volume = p, read_volume(p)
                    yield axial_slice(volume, z)

            ds = tf.data.Dataset.from_generator(
                slices, output_signature=tf.TensorSpec((None, None, 1), tf.uint8))
            return ds.map(lambda x: tf.cast(x, tf.float32) / 255.0)
        ds = tf.data.Dataset.from_tensor_slices(list(self.files))
        if shuffle_seed is not None:  # shuffling names is free: no decoded images are buffered
            ds = ds.shuffle(len(self), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.map(lambda f: _decode(tf.io.read_file(f)), num_parallel_calls=tf.data.AUTOTUNE)

    def dataset(self, image_size, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
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
        if not len(self):
            raise BrainVQError(f"the {self.name} split is empty; lower the fractions or add images")
        target = resolve_cache(cache, len(self), hw, cache_threshold_bytes, cache_dir, self.name)
        shuffle_names = shuffle and target is None and not self.is_nifti
        ds = self._native(seed if shuffle_names else None)
        ds = ds.map(lambda x: _fit(x, hw), num_parallel_calls=tf.data.AUTOTUNE)
        if target is not None:
            ds = ds.cache("" if target == "memory" else target)
        if shuffle and not shuffle_names:
            buffer = max(1, min(len(self), 10_000, SHUFFLE_BUFFER_BYTES // (hw[0] * hw[1] * 4)))
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if with_targets:
            ds = ds.map(lambda x: (x, x))
        return ds.prefetch(tf.data.AUTOTUNE)

    def load(self, image_size, limit: int | None = None) -> np.ndarray:
        """All images (or the first ``limit``) as one (N, H, W, 1) float32 array: small sets only
        (a whole ADNI-size split is ~7.5 GiB at 256x256; :meth:`lazy` streams it instead)."""
        split = self if limit is None else self.subset(range(min(limit, len(self))))
        if not len(split):
            return np.zeros((0, *image_hw(image_size), 1), np.float32)
        return np.concatenate(list(split.dataset(image_size, 256, cache=None).as_numpy_iterator()))

    def chunks(self, image_size, size: int = 1024):
        """``(start, images)`` for consecutive runs of at most ``size`` images, in split order,
        decoded as they are needed: at most one chunk of pixels is in memory at a time."""
        if size < 1:
            raise BrainVQError(f"chunk size {size} must be 1 or more")
        for start in range(0, len(self), size):
            yield start, self.subset(range(start, min(start + size, len(self)))).load(image_size)

    def lazy(self, image_size, chunk: int = 1024) -> "LazyImages":
        """The split's images as :class:`LazyImages`: indexable and chunked, never all in memory."""
        return LazyImages(self, image_size, chunk)

    def images(self, image_size, in_memory_below: int = IN_MEMORY_BELOW):
        """The split's images to score against: one array when their pixels take less than
        ``in_memory_below`` bytes (the demo's training split: 160 MiB), else :class:`LazyImages`
        (an ADNI-size split), which the scores read a chunk at a time."""
        h, w = image_hw(image_size)
        if len(self) * h * w * 4 < in_memory_below:
            return self.load(image_size)
        return self.lazy(image_size)


class LazyImages:
    """A split's images that are read when asked for: ``images[idx]`` (an int array) loads just
    those, ``images.chunks()`` streams them all a chunk at a time, ``len(images)`` counts them.
    ``metrics.nearest_neighbour_ssim`` and ``realism.per_position_fidelity`` take it in place
    of an (N, H, W, 1) array, so scoring against an ADNI-size training split stays within a
    chunk's memory."""

    def __init__(self, split: SliceSplit, image_size, chunk: int = 1024):
        self.split, self.image_size, self.chunk = split, image_size, int(chunk)

    def __len__(self) -> int:
        return len(self.split)

    @property
    def shape(self) -> tuple:
        return (len(self), *image_hw(self.image_size), 1)

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.ndim == 0:
            return self[idx[None]][0]
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        order, inverse = np.unique(idx, return_inverse=True)
        return self.split.subset(order).load(self.image_size)[inverse.reshape(-1)]

    def chunks(self):
        return self.split.chunks(self.image_size, self.chunk)


def _make_split(name: str, entries) -> SliceSplit:
    """entries: (file, subject, slice, label) tuples, sorted by subject then slice."""
    rows = sorted(entries, key=lambda e: (e[1], e[2], e[0]))
    cols = list(zip(*rows)) or [(), (), (), ()]
    return SliceSplit(name, *(tuple(c) for c in cols))


@dataclass(frozen=True)
class BrainDataset:
    """A data set: its three splits, the files skipped as unreadable, and how it was split."""

    name: str
    layout: str
    root: str
    train: SliceSplit
    validate: SliceSplit
    test: SliceSplit
    skipped: tuple[tuple[str, str], ...] = ()
    notes: str = ""
    data_dir: str = ""                                 # the folder given (``root``: where the layout was found)
    duplicates: tuple[tuple[str, ...], ...] = ()       # groups of byte-identical files

    def splits(self) -> dict[str, SliceSplit]:
        return {"train": self.train, "validate": self.validate, "test": self.test}

    def classes(self) -> dict[str, dict[str, int]]:
        """Slices per class in each split ({} for a data set without classes)."""
        if all(y is None for s in self.splits().values() for y in s.labels):
            return {}
        return {k: {y: s.labels.count(y) for y in sorted(set(s.labels) - {None})} for k, s in self.splits().items()}

    def describe(self) -> str:
        """What was found, in a few lines (notebook 01 prints it first): the layout and the folder it
        was found in, slices, subjects and classes per split, files skipped and duplicates."""
        where = self.root if not self.data_dir or self.data_dir == self.root else \
            f"{self.root} (below the folder given, {self.data_dir})"
        classes = self.classes()
        lines = [f"{self.name}: {self.layout} layout in {where}",
                 f"{'split':<10}{'slices':>8}{'subjects':>10}  classes"]
        for key, split in self.splits().items():
            per_class = ", ".join(f"{y} {n}" for y, n in classes.get(key, {}).items()) or "-"
            lines.append(f"{key:<10}{len(split):>8}{len(set(split.subjects)):>10}  {per_class}")
        lines.append(f"how it is split: {self.notes}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s): " + "; ".join(
                f"{shown(Path(f).name)} {why}" for f, why in self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else ""))
        if self.duplicates:
            lines.append(f"{len(self.duplicates)} group(s) of byte-identical files (a copy under another name?): "
                         + "; ".join(" = ".join(shown(Path(f).name) for f in g) for g in self.duplicates[:3])
                         + (" ..." if len(self.duplicates) > 3 else ""))
        return "\n".join(lines)

    def summary(self, image_size=None, max_images_for_stats: int = 2000, seed: int = 0) -> dict:
        """Counts, subjects, labels, subject overlap between splits, native sizes, intensities.

        Intensity statistics (mean, std, fraction of exactly-zero pixels, fraction below 0.05)
        are computed on a seeded sample of at most ``max_images_for_stats`` images per split, at
        native size or at ``image_size`` when given. ``native_sizes`` counts the sampled images
        by native size, keyed ``"HxW"`` (an ADNI slice is ``"240x256"``).
        """
        import tensorflow as tf

        hw = image_hw(image_size) if image_size is not None else None
        splits = self.splits()
        out = {"name": self.name, "layout": self.layout, "root": self.root, "notes": self.notes,
               "images": {k: len(s) for k, s in splits.items()},
               "subjects": {k: len(set(s.subjects)) for k, s in splits.items()},
               "shared_subjects": {f"{a}/{b}": len(set(splits[a].subjects) & set(splits[b].subjects))
                                   for a, b in itertools.combinations(SPLITS, 2)},
               "image_size": list(hw) if hw else None, "native_sizes": {}, "intensity": {},
               "skipped": len(self.skipped), "skipped_files": [f for f, _ in self.skipped[:10]],
               "skipped_reasons": [f"{shown(f)} {why}" for f, why in self.skipped[:10]],
               "data_dir": self.data_dir or self.root,
               "duplicates": [list(g) for g in self.duplicates[:10]], "duplicate_groups": len(self.duplicates)}
        if self.classes():
            out["labels"] = self.classes()
        sizes: dict[str, int] = {}
        for key, split in splits.items():
            part = split.sample(max_images_for_stats, seed)
            total, total_sq, zeros, dark, count = 0.0, 0.0, 0, 0, 0
            if len(part):
                ds = part._native().map(lambda x: (tf.shape(x)[:2], _fit(x, hw) if hw else x))
                for shape, x in ds.as_numpy_iterator():
                    size = f"{shape[0]}x{shape[1]}"
                    sizes[size] = sizes.get(size, 0) + 1
                    x = x.astype(np.float64)
                    total, total_sq, count = total + x.sum(), total_sq + (x**2).sum(), count + x.size
                    zeros, dark = zeros + int((x == 0).sum()), dark + int((x < 0.05).sum())
            mean = total / max(count, 1)
            out["intensity"][key] = {
                "mean": float(mean), "std": float(np.sqrt(max(total_sq / max(count, 1) - mean**2, 0.0))),
                "zero_fraction": float(zeros / max(count, 1)),
                "background_fraction": float(dark / max(count, 1)),
                "sampled_images": len(part)}
        out["native_sizes"] = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
        return out


# ----------------------------------------------------------------------------- checks and listing
def _listing(folder: Path, limit: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                   if not p.name.startswith("."))
    if not names:
        return "nothing (the folder is empty)"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# Files and folders that operating systems leave beside images (macOS: .DS_Store, ._* AppleDouble files,
# __MACOSX/ in zip archives; Windows: Thumbs.db, desktop.ini): never slices, never errors.
JUNK_NAMES = ("thumbs.db", "ehthumbs.db", "desktop.ini")


def _visible(p: Path, root: Path) -> bool:
    """Whether ``p`` (under ``root``) is a file a user put there, not a hidden or system leftover."""
    parts = p.relative_to(root).parts
    return not any(part.startswith(".") or part == "__MACOSX" for part in parts) and \
        p.name.lower() not in JUNK_NAMES


def shown(path) -> str:
    """A path as text that can always be printed: a file name that is not valid UTF-8 keeps its odd
    bytes as \\xNN escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _is_image_name(p: Path) -> bool:
    return p.name.lower().endswith(IMAGE_SUFFIXES)


def _is_nifti_name(p: Path) -> bool:
    return p.name.lower().endswith(NIFTI_SUFFIXES)


def _problem(path: str, check: str) -> str | None:
    """Why ``path`` cannot be used as a slice image, or None when it looks fine."""
    p = Path(path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:   # TensorFlow takes file names as UTF-8 text
        return "has a name that is not valid UTF-8; rename it (e.g. `convmv -f latin1 -t utf8 --notest`)"
    size = p.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    if _is_nifti_name(p):
        try:
            img, _ = _volume_header(path)
        except _BadVolume as exc:
            return str(exc)
        except Exception as exc:  # nibabel raises many kinds for a broken file
            return f"cannot be read as a NIfTI volume ({type(exc).__name__})"
        return _nifti_cut_short(p, img, size)
    if not _is_image_name(p):
        return "is not a PNG or JPEG image"
    if check == "none":
        return None
    # A copy or download that stopped half-way: Pillow's header check passes and TensorFlow's decoder
    # fails mid-epoch (PNG) or fills the rest with grey (JPEG).
    if _cut_short(p, size):
        return "is cut short (its end-of-image marker is missing: an interrupted copy or download?); copy it again"
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None   # the size is checked below, with a message that says what to do
        with Image.open(p) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            if not (limit and w * h > limit):
                im.verify()
        if limit and w * h > limit:
            return (f"is {w}x{h} pixels, more than Pillow's decompression-bomb limit of {limit:,}; a brain "
                    f"slice is far smaller: resize it")
        if check == "full":
            with Image.open(p) as im:
                im.load()
    except Exception as exc:
        return f"cannot be read as an image ({type(exc).__name__})"
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if fmt not in ("PNG", "JPEG"):
        return f"is a {fmt} image; only PNG and JPEG are read"
    if fmt == "JPEG" and mode not in ("L", "RGB"):   # TensorFlow's decoder stops on CMYK/YCCK JPEGs
        return (f"is a {mode} JPEG, which TensorFlow cannot decode; save it as a grey or RGB JPEG or PNG "
                f"(e.g. PIL: Image.open(path).convert('L').save(path))")
    return None


def _cut_short(p: Path, size: int) -> bool:
    """Whether a PNG or JPEG file ends before its end-of-image marker: the PNG's chunks are walked
    to IEND, the JPEG's segments and scans to EOI. Bytes after the marker (zero padding left by file
    recovery, data some exporters append) are not looked at: both decoders ignore them."""
    with open(p, "rb") as fh:
        head = fh.read(8)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return not _png_complete(fh, size)
        if head.startswith(b"\xff\xd8"):
            fh.seek(max(0, size - 64))
            if fh.read().endswith(b"\xff\xd9"):      # the usual case, read from the tail alone
                return False
            fh.seek(0)
            return not _jpeg_complete(fh.read())
    return False


def _png_complete(fh, size: int) -> bool:
    """Walk a PNG's chunks (length, type, data, CRC) from its signature to IEND, reading headers only."""
    pos = 8
    while pos + 12 <= size:
        fh.seek(pos)
        length, kind = int.from_bytes(fh.read(4), "big"), fh.read(4)
        if kind == b"IEND":
            return True
        pos += 12 + length
    return False


_STANDALONE = {0x01, *range(0xD0, 0xD8)}   # JPEG markers without a length (TEM, RST0-7)


def _jpeg_complete(buf: bytes) -> bool:
    """Walk a JPEG's segments by their lengths (so an EXIF thumbnail's own end marker is skipped), and
    each scan's entropy-coded data to the next marker, until EOI."""
    pos, n = 2, len(buf)
    while pos + 1 < n:
        if buf[pos] != 0xFF:
            return True             # not at a marker: damaged rather than cut short; Pillow's check decides
        marker = buf[pos + 1]
        if marker == 0xFF:          # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return True
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            return False
        pos += 2 + int.from_bytes(buf[pos + 2:pos + 4], "big")
        if marker == 0xDA:          # start of scan: entropy-coded data up to the next real marker
            while True:
                pos = buf.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return False
                if buf[pos + 1] == 0x00 or 0xD0 <= buf[pos + 1] <= 0xD7:
                    pos += 2        # a stuffed 0xFF byte, or a restart marker inside the scan
                    continue
                break
    return False


def _nifti_cut_short(p: Path, img, size: int) -> str | None:
    """Why a NIfTI file holds fewer bytes than its header promises (a download cut short), or None.
    A .nii.gz ends with the length of what it unpacks to (modulo 2**32), so no voxel is read."""
    expected = int(img.dataobj.offset) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    if p.name.lower().endswith(".gz"):
        with open(p, "rb") as fh:
            fh.seek(size - 4)
            unpacked = int.from_bytes(fh.read(4), "little")
        short = unpacked != expected % 2**32
    else:
        short = size < expected
    return "is cut short (fewer voxels than its header says: an interrupted download?); copy it again" \
        if short else None


class _BadName(ValueError):
    """A file whose name does not follow its layout's naming scheme."""


def _screen(files, check: str, skip_bad: bool, skipped: list, parse=None) -> list:
    """The files that can be read (and, with ``parse``, whose names parse): with ``parse``, rows
    ``(file, subject, slice)``; without, the file names. A bad file stops loading with one line that
    names it, or with ``skip_bad`` is listed in ``skipped`` with its reason."""
    good = []
    for f in files:
        reason = _problem(f, check)
        row = f
        if reason is None and parse is not None:
            try:
                row = (f, *parse(Path(f)))
            except _BadName as exc:
                reason = str(exc)
        if reason is None:
            good.append(row)
        elif skip_bad:
            skipped.append((f, reason))
        else:
            raise BrainVQError(f"{shown(f)} {reason}; remove or replace it, or pass skip_bad=True "
                               f"(-p skip_bad=true) to skip it")
    return good


def _files_in(folder: Path, split: str, nested: bool = False) -> list[str]:
    """Every non-hidden file of a layout's split (or class) folder; non-images are reported as bad
    later. ``nested``: files in its sub-folders too (a class folder of per-patient folders); else a
    sub-folder that holds images stops loading, since its slices would be left out silently."""
    if not folder.is_dir():
        raise BrainVQError(f"{folder} is missing; the {split} split should be there")
    entries = folder.rglob("*") if nested else folder.iterdir()
    files = sorted(str(p) for p in entries if p.is_file() and _visible(p, folder))
    if not nested:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and _visible(p, folder)):
            inside = next((q for q in sub.rglob("*") if _is_image_name(q) and _visible(q, sub)), None)
            if inside is not None:
                raise BrainVQError(f"{sub} is a folder inside the {split} split folder and holds slices "
                                   f"({inside.name}, ...), which would be left out: move them up into {folder}, "
                                   f"or move the folder out of the data folder")
    if not files:
        raise BrainVQError(f"{folder} is empty; the {split} split needs its slice images there")
    return files


def _seeded_split(keys, fractions, seed: int) -> list[list]:
    """Shuffle ``keys`` (seeded) and cut off one group per fraction; the rest is returned last."""
    keys = list(keys)
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    groups = []
    for frac in fractions:
        n = int(round(frac * len(keys)))
        n = 1 if frac > 0 and n == 0 and len(order) >= 2 else n
        groups.append(order[:n])
        order = order[n:]
    return groups + [order]


# ----------------------------------------------------------------------------- file names
# A layout's file names say whose slice a file is and at which level. Each name either parses
# whole or is refused naming the file: a name that half-parses would invent a patient, or a slice
# number, and no error would show it.
OASIS_NAME = re.compile(r"^(?P<subject>[^\s()]+?)_slice_(?P<slice>\d+)(\.nii)?\.png$", re.IGNORECASE)
PATIENT_SLICE = re.compile(r"^(?P<subject>[^\s()]+)_(?P<slice>\d+)\.(jpe?g|png)$", re.IGNORECASE)
# What file managers add to a copy's name: Windows " (1)" and " - Copy", macOS " copy" and " 2",
# GNOME " (copy)" and " (another copy)".
_COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|\s+-\s+copy(\s*\(\d+\))?|\s+copy(\s+\d+)?|\s+\d+|\s*\((another )?copy\))$",
                          re.IGNORECASE)


def _suffix(name: str) -> str:
    lower = name.lower()
    return ".nii.png" if lower.endswith(".nii.png") else Path(name).suffix


def _name_problem(name: str, pattern_text: str, example: str) -> str:
    suffix = _suffix(name)
    stem = name[:len(name) - len(suffix)]
    copy = _COPY_SUFFIX.search(stem)
    if copy and stem[:copy.start()]:
        original = stem[:copy.start()] + suffix
        return (f"looks like a copy of {shown(original)} (a file manager added '{copy.group().strip()}'), and its "
                f"name is not {pattern_text}; delete it if it is a copy, or rename it (e.g. {example})")
    return f"is not named {pattern_text} (e.g. {example}), so its subject and slice cannot be read from it; rename it"


def parse_oasis_name(path: Path) -> tuple[str, int]:
    """(case, slice) from ``case_001_slice_5.nii.png``; ``_BadName`` for anything else."""
    m = OASIS_NAME.match(path.name)
    if not m:
        raise _BadName(_name_problem(path.name, "CASE_slice_N.nii.png", "case_001_slice_5.nii.png"))
    return m["subject"], int(m["slice"])


def parse_adni_name(path: Path) -> tuple[str, int]:
    """(patient, slice) from ``808819_88.jpeg``; ``_BadName`` for anything else."""
    m = PATIENT_SLICE.match(path.name)
    if not m:
        raise _BadName(_name_problem(path.name, "PATIENT_SLICE.jpeg", "808819_88.jpeg"))
    return m["subject"], int(m["slice"])


def _folder_names(files, root: Path) -> tuple[list[tuple[str, str, int]], str]:
    """Rows (file, subject, slice) of the folder layout, and what was read from the names: subjects
    and slice levels when every name follows one of the two schemes, else the sub-folder as the
    subject and no level for any file (never for some files only: one unknown level would turn
    the prior's slice-level conditioning off for the whole run without a word)."""
    for scheme, parse in (("CASE_slice_N", parse_oasis_name), ("PATIENT_SLICE", parse_adni_name)):
        try:
            return [(f, *parse(Path(f))) for f in files], f"subjects and slice levels read from the {scheme} names"
        except _BadName:
            continue
    bad = next(f for f in files if not (OASIS_NAME.match(Path(f).name) or PATIENT_SLICE.match(Path(f).name)))
    rows = []
    for f in files:
        rel = Path(f).parent.relative_to(root)
        rows.append((f, str(rel) if str(rel) != "." else Path(f).name.split(".")[0], -1))
    return rows, (f"slice levels unknown: {Path(bad).name} (and maybe others) is not named CASE_slice_N or "
                  f"PATIENT_SLICE, so no file's level is used and the prior is not conditioned on it; each "
                  f"sub-folder counts as a subject")


# ----------------------------------------------------------------------------- class folders (adni)
# ADNI's diagnostic groups, by the folder names people give them. Every folder in a split is read
# as the class it names, or loading stops naming the folder: slices are never left out silently.
CLASS_SYNONYMS = {
    "AD": ("Alzheimer", "Alzheimers", "Alzheimer's", "Dementia"),
    "NC": ("CN", "Normal", "Control", "Controls", "HC", "Healthy"),
    "MCI": (), "EMCI": (), "LMCI": (), "SMC": (),
}
ADNI_LABELS = ("AD", "NC")   # the two classes of the course data set (AD_NC)


def class_of(folder_name: str) -> str | None:
    """The class a folder name stands for (``CN`` -> ``NC``), or None."""
    key = folder_name.strip().lower()
    return next((label for label, names in CLASS_SYNONYMS.items()
                 if key in {n.lower() for n in (label, *names)}), None)


def _class_folders(split_dir: Path, split: str) -> dict[str, list[Path]]:
    """{class: folders} of one ADNI split folder; an unknown folder or a loose image stops loading."""
    if not split_dir.is_dir():
        raise BrainVQError(f"{split_dir} is missing; the adni layout needs AD_NC/{split}/ with a folder per class")
    classes: dict[str, list[Path]] = {}
    loose = []
    for p in sorted(split_dir.iterdir()):
        if not _visible(p, split_dir):
            continue
        if p.is_dir():
            label = class_of(p.name)
            if label is None:
                known = ", ".join(f"{k} (or {', '.join(v)})" if v else k for k, v in CLASS_SYNONYMS.items())
                raise BrainVQError(f"{p} is not a class folder brainvq knows ({known}); rename it to its class, "
                                   f"or move it out of {split_dir}")
            classes.setdefault(label, []).append(p)
        elif _is_image_name(p):
            loose.append(p.name)
    if loose:
        raise BrainVQError(f"{split_dir} holds {len(loose)} slice(s) outside any class folder ({shown(loose[0])}"
                           f"{', ...' if len(loose) > 1 else ''}); move them into the folder of their class "
                           f"(AD/, NC/, ...)")
    return classes


# ----------------------------------------------------------------------------- finding the layout
@dataclass(frozen=True)
class Found:
    """Where a layout was found: its kind (oasis or adni), the folder that holds it, and whether that
    folder is a synthetic cohort (``cohort.json`` beside it)."""

    kind: str
    base: Path
    synthetic: bool = False


SEARCH_DEPTH = 2   # course zips unpack one or two folders deep (keras_png_slices_data/keras_png_slices_data/)


def _adni_base(folder: Path) -> Path | None:
    for base in (folder / "AD_NC", folder):
        if (base / "train").is_dir() and (base / "test").is_dir():
            return base
    return None


def _marker(folder: Path) -> Found | None:
    """The layout whose own folders lie directly in ``folder``, if any."""
    synthetic = (folder / "cohort.json").is_file()
    if any((folder / d).is_dir() for d in OASIS_DIRS):
        return Found("oasis", folder, synthetic)
    base = _adni_base(folder)
    return Found("adni", base, synthetic) if base is not None else None


def find_layouts(root: Path, depth: int = SEARCH_DEPTH) -> list[Found]:
    """Every oasis or adni layout in ``root`` or up to ``depth`` folders below it (not below a
    layout once found; hidden and ``__MACOSX`` folders skipped)."""
    found, level = [], [root]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            hit = _marker(folder)
            if hit is not None:
                found.append(hit)
            else:
                try:
                    below += sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p, folder))
                except OSError:
                    continue
        level = below
    return found


def _where(found: Found, root: Path) -> str:
    rel = found.base.relative_to(root) if found.base != root else Path(".")
    return "the folder given" if str(rel) == "." else f"{rel}/"


def locate(root, layout: str = "auto") -> Found | str:
    """The layout to read at ``root``: a :class:`Found` for oasis/adni/synthetic (searched up to
    ``SEARCH_DEPTH`` folders down), else "nifti" or "folder". Two data sets in one folder, or
    a folder layout over a folder that holds an oasis or adni layout, stop with one line."""
    root = _root(root)
    found = find_layouts(root)
    wanted = {"oasis": ("oasis",), "adni": ("adni",), "synthetic": ("oasis", "adni"),
              "auto": ("oasis", "adni")}.get(layout, ())
    matches = [f for f in found if f.kind in wanted]
    if len(matches) > 1:
        where = " and ".join(f"{f.kind} at {_where(f, root)}" for f in matches[:4])
        raise BrainVQError(f"{root} holds more than one data set ({where}); pass the folder of the one to use "
                           f"as the data folder")
    if matches:
        return matches[0]
    if layout in ("folder", "nifti") and found:
        f = found[0]
        masks = " (and its keras_png_slices_seg_* folders hold masks, which would be read as slices)" \
            if f.kind == "oasis" else ""
        raise BrainVQError(f"{root} holds the {f.kind} layout at {_where(f, root)}{masks}; use the dataset "
                           f"{f.kind} (or auto) instead of {layout}")
    if layout in ("oasis", "adni", "synthetic"):
        return Found(layout if layout != "synthetic" else "oasis", root, layout == "synthetic")
    if layout in ("folder", "nifti"):
        return layout
    files = [p for p in root.rglob("*") if p.is_file() and _visible(p, root)]
    if any(_is_nifti_name(p) for p in files):
        return "nifti"
    if any(_is_image_name(p) for p in files):
        return "folder"
    raise BrainVQError(f"cannot tell the data layout of {root}: expected oasis (keras_png_slices_*/), "
                       f"adni (AD_NC/), NIfTI volumes or PNG/JPEG slices, found: {_listing(root)}")


def detect_layout(root) -> str:
    """Guess the layout of ``root``: "oasis", "synthetic", "adni", "nifti" or "folder"."""
    found = locate(root)
    if isinstance(found, str):
        return found
    return "synthetic" if found.synthetic else found.kind


# ----------------------------------------------------------------------------- layouts
def _root(root) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise BrainVQError(f"data folder {path} does not exist; check the path or set BRAINVQ_DATA_DIR")
    if not path.is_dir():
        raise BrainVQError(f"data folder {path} is a file, not a folder; pass the folder that holds "
                           f"the images")
    return path


def _load_oasis(root: Path, check, skip_bad, skipped, **_):
    if not all((root / d).is_dir() for d in OASIS_DIRS):
        raise BrainVQError(f"expected the oasis layout ({', '.join(d + '/' for d in OASIS_DIRS)}) "
                           f"under {root}, found: {_listing(root)}")
    splits = {}
    for split, folder in zip(SPLITS, OASIS_DIRS):
        rows = _screen(_files_in(root / folder, split), check, skip_bad, skipped, parse=parse_oasis_name)
        splits[split] = _make_split(split, [(*row, None) for row in rows])
    masks = [d for d in (f"keras_png_slices_seg_{s}" for s in SPLITS) if (root / d).is_dir()]
    return splits, ("splits by case as shipped (keras_png_slices_train/validate/test)"
                    + (f"; the segmentation masks in {', '.join(m + '/' for m in masks)} are not read" if masks else ""))


def _load_adni(root: Path, check, skip_bad, skipped, validate_fraction, seed, **_):
    base = _adni_base(root)
    if base is None:
        raise BrainVQError(f"expected the adni layout (AD_NC/train/{{AD,NC}}/, AD_NC/test/{{AD,NC}}/) "
                           f"under {root}, found: {_listing(root)}")
    rows, folders, notes = {}, {}, []
    for split in ("train", "test"):
        rows[split] = []
        classes = _class_folders(base / split, split)
        for label, dirs in classes.items():
            for d in dirs:
                if not any(_visible(p, d) for p in d.rglob("*") if p.is_file()):
                    notes.append(f"{split}/{d.name}/ is empty")
                    continue
                folders[f"{split}/{d.name}"] = label
                files = _screen(_files_in(d, f"{split} {d.name}", nested=True), check, skip_bad, skipped,
                                parse=parse_adni_name)
                rows[split] += [(*row, label) for row in files]
        if not rows[split]:
            raise BrainVQError(f"{base / split} holds no class folder of slices; the {split} split needs at least "
                               f"one (AD_NC/{split}/AD/*.jpeg, AD_NC/{split}/NC/*.jpeg)")
    found = {split: sorted({r[3] for r in rows[split]}) for split in rows}
    renamed = sorted(f"{k}/ as {v}" for k, v in folders.items() if k.split("/")[1] != v)
    if renamed:
        notes.append(f"class folders read as: {', '.join(renamed)}")
    if found["train"] != found["test"]:
        only = {split: sorted(set(found[split]) - set(found[other]))
                for split, other in (("train", "test"), ("test", "train"))}
        notes.append("train and test hold different classes: " + "; ".join(
            f"only {split} has {', '.join(v)}" for split, v in only.items() if v))
    labels = sorted(set(found["train"]) | set(found["test"]))
    if len(labels) == 1:
        notes.append(f"only {labels[0]} slices, so the prior is not conditioned on the class")
    patients_by_label = {label: sorted({r[1] for r in rows["train"] if r[3] == label}) for label in labels}
    held_out = set()
    for label, patients in patients_by_label.items():  # stratified: each label on its own
        held_out.update(_seeded_split(patients, [validate_fraction], seed)[0])
    splits = {"train": _make_split("train", [r for r in rows["train"] if r[1] not in held_out]),
              "validate": _make_split("validate", [r for r in rows["train"] if r[1] in held_out]),
              "test": _make_split("test", rows["test"])}
    return splits, "; ".join([f"classes {', '.join(labels)}; test as shipped (AD_NC/test); validation carved from "
                              f"train by patient id ({validate_fraction:.0%} of patients per class, seed {seed})",
                              *notes])


def _load_folder(root: Path, check, skip_bad, skipped, validate_fraction, test_fraction, seed, **_):
    files = sorted(str(p) for p in root.rglob("*") if p.is_file() and _is_image_name(p) and _visible(p, root))
    if not files:
        raise BrainVQError(f"found no PNG or JPEG images under {root} (sub-folders included), "
                           f"found: {_listing(root)}")
    rows, named = _folder_names(_screen(files, check, skip_bad, skipped), root)
    by_file = {r[0]: r for r in rows}
    val, test, train = _seeded_split(list(by_file), [validate_fraction, test_fraction], seed)
    splits = {k: _make_split(k, [(*by_file[f], None) for f in group]) for k, group in zip(SPLITS, (train, val, test))}
    return splits, (f"random split by file ({validate_fraction:.0%} validate, {test_fraction:.0%} "
                    f"test, seed {seed}); slices of one subject may fall in several splits; {named}")


def _load_nifti(root: Path, check, skip_bad, skipped, validate_fraction, test_fraction, seed, **_):
    volumes = sorted(str(p) for p in root.rglob("*") if p.is_file() and _is_nifti_name(p) and _visible(p, root))
    if not volumes:
        raise BrainVQError(f"found no .nii or .nii.gz volumes under {root}, found: {_listing(root)}")
    volumes = _screen(volumes, "header", skip_bad, skipped)  # headers are needed for slice counts
    val, test, train = _seeded_split(volumes, [validate_fraction, test_fraction], seed)
    splits = {}
    for split, group in zip(SPLITS, (train, val, test)):
        entries = []
        for v in group:
            subject = re.sub(r"\.nii(\.gz)?$", "", Path(v).name, flags=re.IGNORECASE)
            entries += [(f"{v}#z={z}", subject, z, None) for z in range(_volume_header(v)[1])]
        splits[split] = _make_split(split, entries)
    return splits, (f"axial slices of NIfTI volumes, split by volume ({validate_fraction:.0%} "
                    f"validate, {test_fraction:.0%} test, seed {seed}); intensities scaled per "
                    f"volume by the 0.5-99.5th percentiles of non-zero voxels")


_LOADERS = {"oasis": _load_oasis, "adni": _load_adni, "folder": _load_folder, "nifti": _load_nifti}


def _cohort_labels(meta: dict) -> dict[str, str]:
    """cohort.json ``labels`` as {subject: label}; accepts {subject: label} or {label: [subjects]}."""
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return {}
    if all(isinstance(v, list) for v in labels.values()):
        return {s: label for label, subjects in labels.items() for s in subjects}
    return {str(k): str(v) for k, v in labels.items()}


def duplicate_files(files) -> list[tuple[str, ...]]:
    """Groups of byte-identical files (a copy under another name): files of equal size are hashed."""
    by_size: dict[int, list[str]] = {}
    for f in files:
        if "#z=" not in f:
            by_size.setdefault(os.stat(f).st_size, []).append(f)
    groups: dict[bytes, list[str]] = {}
    for same in (v for v in by_size.values() if len(v) > 1):
        for f in same:
            with open(f, "rb") as fh:
                groups.setdefault(hashlib.blake2b(fh.read(), digest_size=16).digest(), []).append(f)
    return sorted(tuple(sorted(v)) for v in groups.values() if len(v) > 1)


def load_dataset(layout: str, root, *, validate_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 0, skip_bad: bool = False, check: str = "header") -> BrainDataset:
    """Read the data set at ``root`` in ``layout`` (one of LAYOUTS) into three splits.

    An oasis or adni layout (and a synthetic cohort in either) is found in ``root`` or up to two
    folders below it, as course zips unpack (``BrainDataset.root`` is where; ``data_dir`` the
    folder given). Every file name is parsed by its layout's scheme and every ADNI class folder
    read as its class (``CN`` as ``NC``), or loading stops with one line naming the file or folder.

    ``check="header"`` opens every image header with Pillow now, and checks that PNG/JPEG files
    reach their end-of-image marker, so a corrupt, cut-short, empty or non-image file stops
    loading with its name (``"full"`` also decodes every image; ``"none"`` checks only that files
    are non-empty images by name). With ``skip_bad=True`` such files (and files whose names do not
    parse) are skipped instead, listed in ``BrainDataset.skipped`` and counted in a warning.
    Byte-identical files are listed in ``BrainDataset.duplicates``. ``validate_fraction`` and
    ``test_fraction`` apply where a layout has no such split of its own (seeded by ``seed``).
    """
    if layout not in LAYOUTS:
        raise BrainVQError(f"unknown data layout {layout!r}; use one of: {', '.join(LAYOUTS)}")
    if check not in ("none", "header", "full"):
        raise BrainVQError(f"unknown check {check!r}; use 'header', 'full' or 'none'")
    for frac_name, frac in (("validate_fraction", validate_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise BrainVQError(f"{frac_name}={frac} must be in [0, 1)")
    if validate_fraction + test_fraction >= 1:
        raise BrainVQError(f"validate_fraction + test_fraction = {validate_fraction + test_fraction} "
                           f"leaves nothing to train on; keep their sum below 1")
    if layout == "synthetic" and not Path(root).expanduser().exists():
        raise BrainVQError(f"synthetic cohort not found at {root}; build it with `brainvq synth {root}`")
    given = _root(root)
    found = locate(given, layout)
    kind, path = (found, given) if isinstance(found, str) else (found.kind, found.base)
    synthetic = not isinstance(found, str) and (found.synthetic or layout == "synthetic")
    if not isinstance(found, str) and found.kind == "adni" and found.base.name == "AD_NC" and found.base != given:
        path = found.base.parent   # the folder that holds AD_NC/ is where the layout is
    name, meta = kind, None
    if synthetic:
        meta = {}
        if (path / "cohort.json").is_file():
            try:
                meta = json.loads((path / "cohort.json").read_text())
            except json.JSONDecodeError as exc:
                raise BrainVQError(f"{path / 'cohort.json'} is not valid JSON ({exc.msg}); rebuild the "
                                   f"cohort with `brainvq synth {path}`") from None
        name = meta.get("name", "synthetic (MNI152-derived)")
    skipped: list[tuple[str, str]] = []
    splits, notes = _LOADERS[kind](path, check=check, skip_bad=skip_bad, skipped=skipped, seed=seed,
                                   validate_fraction=validate_fraction, test_fraction=test_fraction)
    if path != given:
        notes = f"found the {kind} layout in {path.relative_to(given)}/ below the folder given; {notes}"
    labels = _cohort_labels(meta or {})
    if labels:
        splits = {k: replace(s, labels=tuple(labels.get(subj, y) for subj, y in zip(s.subjects, s.labels)))
                  for k, s in splits.items()}
    duplicates = tuple(duplicate_files([f for s in splits.values() for f in s.files]))
    if skipped:
        first = ", ".join(shown(Path(f).name) for f, _ in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} unreadable file(s) under {path}: {first}"
                      f"{' ...' if len(skipped) > 3 else ''}", stacklevel=2)
    return BrainDataset(name=name, layout="synthetic" if meta is not None else kind, root=str(path),
                        skipped=tuple(skipped), notes=notes, data_dir=str(given), duplicates=duplicates, **splits)


# ----------------------------------------------------------------------------- views for notebooks
def one_slice_per_subject(split: SliceSplit, n: int = 16) -> SliceSplit:
    """The middle slice of each of the first ``n`` subjects of a split (one row of a grid)."""
    by_subject: dict[str, list[int]] = {}
    for i, subject in enumerate(split.subjects):
        by_subject.setdefault(subject, []).append(i)
    picks = []
    for indices in list(by_subject.values())[:n]:
        ordered = sorted(indices, key=lambda i: split.slices[i])
        picks.append(ordered[len(ordered) // 2])
    return split.subset(picks)


def subject_slices(split: SliceSplit, subject: str) -> SliceSplit:
    """All slices of one subject, in slice order."""
    picks = sorted((i for i, s in enumerate(split.subjects) if s == subject), key=lambda i: split.slices[i])
    if not picks:
        raise BrainVQError(f"subject {subject!r} is not in the {split.name} split")
    return split.subset(picks)


def format_summary(summary: dict) -> str:
    """A small text table of ``BrainDataset.summary()``."""
    lines = [f"{summary['name']} ({summary['layout']} layout)",
             f"{'split':<10}{'images':>8}{'subjects':>10}{'mean':>8}{'std':>8}{'zero px':>9}"]
    for split in SPLITS:
        stats = summary["intensity"].get(split, {})
        lines.append(f"{split:<10}{summary['images'][split]:>8}{summary['subjects'][split]:>10}"
                     f"{stats.get('mean', float('nan')):>8.3f}{stats.get('std', float('nan')):>8.3f}"
                     f"{stats.get('zero_fraction', float('nan')):>9.1%}")
    lines.append(f"native sizes: {summary['native_sizes']}; pipeline size: {summary['image_size']}")
    if "labels" in summary:
        lines.append(f"labels: {summary['labels']}")
    if summary.get("skipped"):
        lines.append(f"skipped files: {summary['skipped']}")
    return "\n".join(lines)
