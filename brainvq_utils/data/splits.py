"""A data set's splits: file names and per-image metadata, no pixels until they are asked for.

``SliceSplit`` is one split (files, subjects, slice levels, labels) with its views: ``dataset``
(the ``tf.data`` input pipeline, ``stream.batches``), ``load`` (small sets, as one array),
``chunks`` and ``lazy`` (``LazyImages``: indexable, read a chunk at a time). ``BrainDataset`` holds
the three splits, the files skipped, the duplicates and how it was split, and says what it found
(``describe``, ``summary``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import BrainVQError
from . import stream
from .checks import shown
from .stream import CACHE_IN_MEMORY_BELOW, _fit, image_hw

SPLITS = ("train", "validate", "test")
IN_MEMORY_BELOW = 512 * 1024**2  # SliceSplit.images: a split larger than this is read a chunk at a time


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
        """tf.data of float32 (H, W, 1) images at their native size, in split order (``stream.native``)."""
        return stream.native(self, shuffle_seed)

    def dataset(self, image_size, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
                cache="auto", repeat: bool = False, with_targets: bool = False,
                drop_remainder: bool = False, factor: int | None = None,
                cache_threshold_bytes: int = CACHE_IN_MEMORY_BELOW, cache_dir=None):
        """A streaming ``tf.data.Dataset`` of batches (B, H, W, 1) float32 in [0, 1]: ``stream.batches``
        (decode, resize and pad, cache, shuffle, repeat, batch, prefetch) with these arguments."""
        return stream.batches(self, image_size, batch_size, shuffle, seed, cache, repeat, with_targets,
                              drop_remainder, factor, cache_threshold_bytes, cache_dir)

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

    def _relative(self, f: str) -> str:
        try:
            return str(Path(f).relative_to(self.root))
        except ValueError:
            return f

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
                         + "; ".join(" = ".join(shown(self._relative(f)) for f in g) for g in self.duplicates[:3])
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
            total, total_sq, zeros, dark, count, brightest = 0.0, 0.0, 0, 0, 0, 0.0
            if len(part):
                ds = part._native().map(lambda x: (tf.shape(x)[:2], _fit(x, hw) if hw else x))
                for shape, x in ds.as_numpy_iterator():
                    size = f"{shape[0]}x{shape[1]}"
                    sizes[size] = sizes.get(size, 0) + 1
                    x = x.astype(np.float64)
                    total, total_sq, count = total + x.sum(), total_sq + (x**2).sum(), count + x.size
                    zeros, dark = zeros + int((x == 0).sum()), dark + int((x < 0.05).sum())
                    brightest = max(brightest, float(x.max()) if x.size else 0.0)
            mean = total / max(count, 1)
            out["intensity"][key] = {
                "mean": float(mean), "std": float(np.sqrt(max(total_sq / max(count, 1) - mean**2, 0.0))),
                "zero_fraction": float(zeros / max(count, 1)),
                "background_fraction": float(dark / max(count, 1)), "max": brightest,
                "sampled_images": len(part)}
        out["native_sizes"] = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
        return out


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
