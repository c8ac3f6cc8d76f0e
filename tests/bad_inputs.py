"""Writers of bad and odd inputs for tests/test_bad_inputs.py: every file is made here, at test time,
with Pillow, numpy, nibabel and plain bytes (no binaries in the repository)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from test_data import cmyk_jpeg, make_adni, make_nifti, make_oasis  # noqa: F401  (re-exported)

TRAIN = "keras_png_slices_train"


def png_bytes(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, "PNG", **save)
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def gradient(height: int = 32, width: int = 32) -> np.ndarray:
    """A uint8 grey ramp, left to right, so that a decoded image can be compared pixel by pixel."""
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


def palette_png(grey: np.ndarray) -> bytes:
    """A palette ("P") PNG: the pixels are indices, and the palette maps index i to the grey 255 - i."""
    img = Image.frombytes("P", (grey.shape[1], grey.shape[0]), (255 - grey).tobytes())
    img.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels (900 M by default, over Pillow's
    decompression-bomb limit) with almost no data: what a crafted or broken file looks like to a reader
    that trusts the header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def nifti(path: Path, volume: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def non_utf8_name(folder: Path, stem: bytes = b"case_009_slice_0\xff", suffix: bytes = b".nii.png") -> Path:
    """A file whose name is not valid UTF-8 (a Latin-1 byte), as copied from an old archive."""
    raw = os.fsencode(folder) + b"/" + stem + suffix
    with open(raw, "wb") as fh:
        fh.write(png_bytes(gradient()))
    return Path(os.fsdecode(raw))
