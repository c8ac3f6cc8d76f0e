"""The embedded synthetic cohort: brain MRI slices made offline from the MNI152 template.

No download is needed: the 1 mm MNI152 T1 template, its brain mask and its grey-matter
probability map ship inside the ``nilearn`` wheel. The template is already skull-stripped
(brain only, black background), like the OASIS "masked" slices, and we multiply it by the
brain mask once more to drop the few voxels of dura left at its edge.

How one synthetic subject is simulated (all draws from ``default_rng([seed, index])``, so a
subject never depends on how subjects are spread over worker processes):

1. Geometry. A point ``p`` of the subject's head (mm, relative to the brain centre) is looked
   up in the template at ``c + R·S⁻¹·p + t + D(p)``: ``R`` a small rotation (±3°, ±5° in
   plane), ``S`` a scale of ±6 % (plus ±2 % per axis), ``t`` a shift of a few mm, and ``D`` a
   smooth random displacement (a 6×6×6 grid of control points, 3 mm standard deviation,
   interpolated with cubic splines). Only the points that end up in the images are evaluated:
   the smooth fields on a coarse in-plane grid (every 8th pixel), upsampled bilinearly, then
   the template with trilinear interpolation. The volume is never deformed as a whole.
2. Slices. ``slices`` axial planes spread from the cerebellum (20 % of the brain's height) to
   near the vertex (90 %), both ends jittered per subject. Pixel spacing is 0.85 mm at 256 px
   (a 218 mm field of view at every ``size``), so the brain fills most of the frame; images
   smaller than 256 px are rendered at twice the resolution and averaged down (no aliasing).
   Anterior is at the top and the subject's right on the image's left (radiological view).
3. Atrophy (optional). Enlarged lateral ventricles: tissue within 1.5–3.5 mm of the
   template's lateral ventricles turns CSF-dark. Thinner cortex: grey matter within
   1–2 mm of CSF or of the brain surface turns CSF-dark (wider sulci). The amounts come
   from a second stream ``default_rng([seed, index, 1])``, so the same subject rendered with
   and without atrophy has the same anatomy otherwise.
4. Intensity. A per-subject contrast (gamma 1.3–1.9, white matter at 0.75–0.9), a smooth
   multiplicative bias field (3×3×3 control points, about ±8 %), and Rician noise of
   1–2 % of full scale inside the brain; the background stays exactly 0.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from scipy.special import expit

from brainvq_utils.errors import BrainVQError
from brainvq_utils.progress import Bar

DEMO_SUBJECTS = 100
COHORT_NAME = "synthetic (MNI152-derived)"
LAYOUTS = ("oasis", "adni")
OASIS_SPLITS = {"train": 0.8, "validate": 0.1, "test": 0.1}
ADNI_TEST_FRACTION = 0.2
FOV_MM = 0.85 * 256          # field of view of an image, whatever its size in pixels
Z_RANGE = (0.20, 0.90)       # first and last slice, as fractions of the brain's height
CSF = 0.28                   # CSF intensity of the template (its median in dark voxels)
_SPLIT_STREAM = 2**32 - 1    # rng stream for splits and labels, apart from the subject streams

_VOLUMES: dict | None = None  # set in worker processes by _init_worker


@lru_cache(maxsize=2)
def _load_volumes(with_atrophy: bool) -> dict:
    """Template (cropped to the brain), and for atrophy the maps it needs, as float32."""
    from nilearn import datasets  # imported here: slow, and only the parent process needs it

    img = datasets.load_mni152_template(resolution=1)
    t = img.get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0.5
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0)
    crop = tuple(slice(max(a - 6, 0), b + 7) for a, b in zip(lo, hi))
    vols = {"t": np.ascontiguousarray((t * brain)[crop]),
            "origin": np.array([c.start for c in crop], float),
            "lo": lo.astype(float), "hi": hi.astype(float)}
    if with_atrophy:
        gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
        dark = brain & (t < 0.42)
        # Lateral ventricles: large dark components of a central box (|x| < 30, -50 < y < 40,
        # -20 < z < 40 mm) that do not cross the midline (that one is 3rd ventricle + cisterns).
        to_vox = np.linalg.inv(img.affine)
        a = np.round(to_vox @ [-30, -50, -20, 1])[:3].astype(int)
        b = np.round(to_vox @ [30, 40, 40, 1])[:3].astype(int)
        mid = int(round((to_vox @ [0, 0, 0, 1])[0]))
        box = np.zeros_like(brain)
        box[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = True
        lab, n = ndi.label(dark & box)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        on_midline = set(np.unique(lab[mid]))
        keep = [k for k in range(1, n + 1) if sizes[k] > 1000 and k not in on_midline]
        vent = np.isin(lab, keep)
        outer = ~brain | ((t < 0.5) & ~vent)  # background, sulci (partial volume too), cisterns
        vols["vent_dist"] = ndi.distance_transform_edt(~vent[crop]).astype(np.float32)
        vols["csf_dist"] = ndi.distance_transform_edt(~outer[crop]).astype(np.float32)
        vols["gm"] = np.ascontiguousarray((gm * brain)[crop])
    return vols


def _render(vols: dict, index: int, seed: int, size: int, slices: int, atrophy: bool):
    rng = np.random.default_rng([seed, index])
    ang = np.deg2rad(rng.uniform(-1, 1, 3) * [3.0, 3.0, 5.0])
    scale = (1 + rng.uniform(-0.06, 0.06)) * (1 + rng.uniform(-0.02, 0.02, 3))
    shift = rng.uniform(-3, 3, 3)
    z_frac = np.array(Z_RANGE) + rng.uniform(-0.02, 0.02, 2)
    disp = rng.normal(0.0, 3.0, (3, 6, 6, 6))
    log_bias = rng.normal(0.0, 0.08, (3, 3, 3))
    gamma, white = rng.uniform(1.3, 1.9), rng.uniform(0.75, 0.9)
    sigma = rng.uniform(0.01, 0.02)

    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
           @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    lin = rot / scale  # subject mm -> template voxels (1 mm)
    centre = (vols["lo"] + vols["hi"]) / 2
    half = (vols["hi"] - vols["lo"]) / 2 + 10  # the control grids span the brain + 10 mm

    # Smooth fields on a coarse in-plane grid: every 8th pixel of the rendering.
    sup = 2 if size <= 128 else 1
    n_px = size * sup
    n_c = n_px // 8 + 1
    spacing = FOV_MM / n_px
    px = (np.linspace(0, n_px - 1, n_c) - (n_px - 1) / 2) * spacing
    z = (vols["lo"][2] + np.linspace(*z_frac, slices) * (vols["hi"][2] - vols["lo"][2])) - centre[2]
    pz, py, pxx = np.meshgrid(z, -px, -px, indexing="ij")  # rows: anterior first; cols: right first
    p = np.stack([pxx, py, pz]).reshape(3, -1)
    grid = (p + half[:, None]) / (2 * half[:, None]) * (np.array(disp.shape[1:])[:, None] - 1)
    d = np.stack([ndi.map_coordinates(disp[k], grid, order=3, mode="nearest") for k in range(3)])
    q = centre[:, None] + lin @ p + shift[:, None] + d - vols["origin"][:, None]
    bgrid = grid * (np.array(log_bias.shape)[:, None] - 1) / (np.array(disp.shape[1:])[:, None] - 1)
    bias = np.exp(ndi.map_coordinates(log_bias, bgrid, order=3, mode="nearest"))

    # Bilinear upsampling (slices, n_c, n_c) -> (slices, n_px, n_px), one axis at a time.
    pos = np.arange(n_px) * (n_c - 1) / (n_px - 1)
    i0 = np.minimum(pos.astype(int), n_c - 2)
    f = (pos - i0).astype(np.float32)
    fields = np.concatenate([q, bias[None]]).reshape(4, slices, n_c, n_c).astype(np.float32)
    fields = fields[..., i0] * (1 - f) + fields[..., i0 + 1] * f
    fields = fields[:, :, i0] * (1 - f[:, None]) + fields[:, :, i0 + 1] * f[:, None]
    coords, bias = fields[:3], fields[3]
    img = ndi.map_coordinates(vols["t"], coords, order=1, cval=0.0)
    if atrophy:
        arng = np.random.default_rng([seed, index, 1])
        grow, thin = arng.uniform(1.5, 3.5), arng.uniform(1.0, 2.0)
        w_vent = expit((grow - ndi.map_coordinates(vols["vent_dist"], coords, order=1, cval=99.0)) / 0.5)
        w_cortex = ndi.map_coordinates(vols["gm"], coords, order=1) * expit(
            (thin - ndi.map_coordinates(vols["csf_dist"], coords, order=1)) / 0.4)
        w = np.maximum(w_vent, w_cortex)
        img = img * (1 - w) + np.minimum(img, CSF) * w  # darken, never brighten the background
    img = white / 0.87**gamma * np.power(img, gamma) * bias  # template white matter is 0.87
    if sup > 1:
        img = img.reshape(slices, size, sup, size, sup).mean(axis=(2, 4))
    inside = img > 2e-3
    n1, n2 = rng.standard_normal((2, slices, size, size), dtype=np.float32) * sigma
    img = np.where(inside, np.sqrt((img + n1) ** 2 + n2**2), 0.0)  # Rician noise in the brain
    return np.clip(img, 0, 1).astype(np.float32)


def render_subject(index: int, seed: int = 0, size: int = 256, slices: int = 32,
                   atrophy: bool = False) -> np.ndarray:
    """Subject ``index`` of cohort ``seed``: (slices, size, size) float32 in [0, 1], no disk I/O."""
    _check(3, size, "oasis", slices)
    return _render(_load_volumes(bool(atrophy)), index, seed, size, slices, bool(atrophy))


def _check(subjects, size, layout, slices):
    if subjects < 3:
        raise BrainVQError(f"subjects={subjects} is too few: a cohort needs at least 3 (one per split)")
    if size < 32 or size % 16:
        raise BrainVQError(f"size={size} is not allowed: use a multiple of 16 of at least 32 (e.g. 64, 128, 256)")
    if layout not in LAYOUTS:
        raise BrainVQError(f"layout={layout!r} is unknown: use one of {', '.join(LAYOUTS)}")
    if slices < 1:
        raise BrainVQError(f"slices_per_subject={slices} is too few: use 1 or more")


def _split(ids: list, fractions: dict, rng) -> dict:
    """Shuffle ``ids`` and cut them by ``fractions``; every split gets one id if it can."""
    ids = [ids[i] for i in rng.permutation(len(ids))]
    names = list(fractions)
    counts = {k: int(round(fractions[k] * len(ids))) for k in names[1:]}
    if len(ids) >= len(names):
        counts = {k: max(1, c) for k, c in counts.items()}
    out, start = {}, len(ids) - sum(counts.values())
    out[names[0]] = ids[:start]
    for k in names[1:]:
        out[k], start = ids[start:start + counts[k]], start + counts[k]
    return out


def _context():
    """fork on Linux: workers start at once, share the template and need no ``__main__`` guard.
    Workers only run numpy/scipy/Pillow, never TensorFlow, so forking a process that has
    imported it is safe. Elsewhere spawn (macOS frameworks do not survive a fork)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _init_worker(vols):
    global _VOLUMES
    _VOLUMES = vols


def _write_subject(job):
    """Render one subject and write its slices: job = (index, seed, size, slices, atrophy, files, crop)."""
    index, seed, size, slices, atrophy, files, crop = job
    vols = _VOLUMES if _VOLUMES is not None else _load_volumes(atrophy)
    img = np.round(_render(vols, index, seed, size, slices, atrophy) * 255).astype(np.uint8)
    for k, path in enumerate(files):
        im = Image.fromarray(img[k, crop:size - crop] if crop else img[k])
        if path.endswith(".jpeg"):
            im.save(path, format="JPEG", quality=95)
        else:
            im.save(path, format="PNG")  # Pillow writes no time or text chunks: files are reproducible
    return index


def build_cohort(out_dir, subjects: int = DEMO_SUBJECTS, seed: int = 0, size: int = 256,
                 layout: str = "oasis", atrophy: bool = False, slices_per_subject: int = 32,
                 workers: int | None = None, overwrite: bool = False, progress: bool | None = None) -> dict:
    """Write a synthetic cohort to ``out_dir`` in the ``oasis`` or ``adni`` layout; return its manifest.

    oasis: ``keras_png_slices_{train,validate,test}/case_XXX_slice_N.nii.png`` (size×size PNG),
    split 0.8/0.1/0.1 by subject. adni: ``AD_NC/{train,test}/{AD,NC}/PATIENT_SLICE.jpeg`` (size
    wide × 15/16·size high JPEG), half the subjects with atrophy (AD), split 0.8/0.2 by patient
    within each group; adni implies ``atrophy=True``. With ``atrophy=True`` half the subjects
    (a seeded choice) are atrophied. ``cohort.json`` holds the manifest; all of it except
    ``build_seconds`` is the same for two builds with the same arguments, and so is every image
    byte. ``overwrite=True`` removes only this layout's folders and ``cohort.json`` first.
    ``progress``: a bar per subject (None: when someone watches; see ``progress.Bar``).
    """
    start = time.perf_counter()
    _check(subjects, size, layout, slices_per_subject)
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise BrainVQError(f"workers={workers} is too few: use 1 or more")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BrainVQError(f"out_dir {out} is a file: choose a folder")
    tops = ["keras_png_slices_train", "keras_png_slices_validate", "keras_png_slices_test"] \
        if layout == "oasis" else ["AD_NC"]
    existing = sum(1 for f in out.rglob("*") if f.is_file()) if out.exists() else 0
    if existing and not overwrite:
        raise BrainVQError(f"{out} already holds {existing} files; pass overwrite=True / --overwrite "
                           "or choose another folder")
    for name in tops:
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "cohort.json").unlink(missing_ok=True)

    atrophy = bool(atrophy) or layout == "adni"
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    ad = set(rng.permutation(subjects)[: subjects // 2].tolist()) if atrophy else set()
    if layout == "oasis":
        ids = [f"case_{i + 1:03d}" for i in range(subjects)]
        splits = _split(list(range(subjects)), OASIS_SPLITS, rng)
        folder = {i: out / f"keras_png_slices_{s}" for s, idx in splits.items() for i in idx}
        names = [f"case_{{:03d}}_slice_{k}.nii.png" for k in range(slices_per_subject)]
        crop = 0
    else:
        ids = [f"{100001 + i:06d}" for i in range(subjects)]
        fr = {"train": 1 - ADNI_TEST_FRACTION, "test": ADNI_TEST_FRACTION}
        nc = _split(sorted(set(range(subjects)) - ad), fr, rng)
        adg = _split(sorted(ad), fr, rng)
        splits = {s: sorted(nc[s] + adg[s]) for s in fr}
        folder = {i: out / "AD_NC" / s / ("AD" if i in ad else "NC") for s, idx in splits.items() for i in idx}
        names = [f"{{}}_{78 + k}.jpeg" for k in range(slices_per_subject)]
        crop = size // 32
        for s in fr:
            for g in ("AD", "NC"):
                (out / "AD_NC" / s / g).mkdir(parents=True, exist_ok=True)
    for d in set(folder.values()):
        d.mkdir(parents=True, exist_ok=True)
    number = (lambda i: i + 1) if layout == "oasis" else (lambda i: 100001 + i)
    jobs = [(i, seed, size, slices_per_subject, i in ad,
             [str(folder[i] / n.format(number(i))) for n in names], crop) for i in range(subjects)]

    def consume(done):
        with Bar(subjects, "building the synthetic cohort", "subject", show=progress) as bar:
            for _ in done:
                bar.update(1)

    if workers == 1:
        consume(map(_write_subject, jobs))
    else:  # each subject has its own rng stream, so the files do not depend on scheduling
        vols = _load_volumes(atrophy)
        with warnings.catch_warnings():  # Python >= 3.12 warns on any fork of a threaded process
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            pool = _context().Pool(min(workers, subjects), _init_worker, (vols,))
        with pool:
            consume(pool.imap_unordered(_write_subject, jobs))

    manifest = {
        "name": COHORT_NAME, "generator": "brainvq_utils.synthetic", "version": 1,
        "seed": seed, "subjects": subjects, "size": size, "layout": layout,
        "image_size": [size - 2 * crop, size], "slices_per_subject": slices_per_subject,
        "atrophy": atrophy,
        "splits": {s: [ids[i] for i in sorted(idx)] for s, idx in splits.items()},
        "labels": {ids[i]: ("AD" if i in ad else "NC") for i in range(subjects)},
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    (out / "cohort.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
