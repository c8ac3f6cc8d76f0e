"""Checks on the files of a data folder, before any pixel is decoded for training.

Every image is screened when a data set is loaded (``_screen``): its name must be UTF-8, it must not
be empty, be a PNG or JPEG that reaches its end-of-image marker (``_cut_short`` walks the PNG's chunks
and the JPEG's segments), open in Pillow as grey or RGB within the decompression-bomb limit (and
decode whole with ``check="full"``); a NIfTI volume must be one 3-D volume whose file holds every
voxel its header promises. A file that fails stops loading with one line naming it, or is skipped
and listed (``skip_bad``). Files operating systems leave behind are not data (``_visible``), and
byte-identical files are found (``duplicate_files``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BrainVQError
from .stream import _BadVolume, _volume_header

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


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


def stray_slices(folder: Path, reads: str, remedy: str, allowed=()) -> None:
    """Stop loading when a sub-folder of ``folder`` that the layout does not read (not in ``allowed``)
    holds slices: they would be left out without a word. ``reads`` says what the layout reads there,
    ``remedy`` what to do."""
    here = folder.resolve()
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p, folder)):
        if sub.name in allowed or (sub.is_symlink() and (sub.resolve() == here or sub.resolve() in here.parents)):
            continue   # the layout's own folders; a link back to this folder or above it (a loop)
        inside = next((q for q in sub.rglob("*") if _is_image_name(q) and _visible(q, sub)), None)
        if inside is not None:
            raise BrainVQError(f"{sub} holds slices ({shown(inside.name)}, ...) but {reads}, so they would be left "
                               f"out: {remedy}")


def _files_in(folder: Path, split: str) -> list[str]:
    """Every non-hidden file of a layout's split (or class) folder; non-images are reported as bad
    later. A sub-folder that holds images stops loading (``stray_slices``)."""
    if not folder.is_dir():
        raise BrainVQError(f"{folder} is missing; the {split} split should be there")
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and _visible(p, folder))
    stray_slices(folder, f"the {split} folder is read without its sub-folders",
                 f"move them up into {folder.name}/ if they are not copies, or move the folder out of the data folder")
    if not files:
        raise BrainVQError(f"{folder} is empty; the {split} split needs its slice images there")
    return files


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
