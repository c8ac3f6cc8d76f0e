"""Tests of the embedded synthetic cohort (brainvq_utils.synthetic): small cohorts, fast."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainvq_utils.errors import BrainVQError
from brainvq_utils.synthetic import DEMO_SUBJECTS, build_cohort, render_subject

OASIS_DIRS = ["keras_png_slices_test", "keras_png_slices_train", "keras_png_slices_validate"]


def files_of(root: Path) -> dict:
    """Relative path -> bytes of every image file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.suffix in (".png", ".jpeg")}


def manifest_of(root: Path) -> dict:
    m = json.loads((root / "cohort.json").read_text())
    m.pop("build_seconds")
    return m


@pytest.fixture(scope="module")
def subject_pair():
    return render_subject(0, size=64), render_subject(1, size=64)


def test_determinism_across_builds_and_workers(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_cohort(a, subjects=4, size=64, seed=3, workers=1)
    build_cohort(b, subjects=4, size=64, seed=3, workers=2)  # other process layout, same bytes
    build_cohort(c, subjects=4, size=64, seed=4, workers=1)
    fa, fb, fc = files_of(a), files_of(b), files_of(c)
    assert len(fa) == 4 * 32
    assert fa == fb
    assert manifest_of(a) == manifest_of(b)
    # Another seed: other subjects (and another split, so compare by subject number).
    by_case = lambda f: {Path(k).name: v for k, v in f.items()}
    same = sum(by_case(fa)[k] == by_case(fc)[k] for k in by_case(fa))
    assert same == 0


def test_oasis_layout(tmp_path):
    m = build_cohort(tmp_path, subjects=4, size=256, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.json"] + OASIS_DIRS
    pattern = re.compile(r"^case_(\d{3})_slice_(\d+)\.nii\.png$")
    seen = {}
    for d in OASIS_DIRS:
        split = d.removeprefix("keras_png_slices_")
        for p in (tmp_path / d).iterdir():
            match = pattern.match(p.name)
            assert match, p.name
            case, k = match.group(1), int(match.group(2))
            assert str(k) == match.group(2) and 0 <= k < 32  # no zero padding
            seen.setdefault(case, set()).add(split)
            assert f"case_{case}" in m["splits"][split]
    assert sorted(seen) == ["001", "002", "003", "004"]
    assert all(len(s) == 1 for s in seen.values())  # split by subject
    assert sum(len(list((tmp_path / d).iterdir())) for d in OASIS_DIRS) == 4 * 32
    assert all(len(m["splits"][s]) >= 1 for s in ("train", "validate", "test"))
    im = Image.open(tmp_path / "keras_png_slices_train" / f"{m['splits']['train'][0]}_slice_15.nii.png")
    assert im.format == "PNG" and im.mode == "L" and im.size == (256, 256)
    on_disk = json.loads((tmp_path / "cohort.json").read_text())
    assert on_disk == m
    assert m["name"] == "synthetic (MNI152-derived)" and m["version"] == 1
    assert m["layout"] == "oasis" and m["slices_per_subject"] == 32 and m["atrophy"] is False
    assert set(m["labels"].values()) == {"NC"}


def test_adni_layout(tmp_path):
    m = build_cohort(tmp_path, subjects=4, size=256, seed=0, layout="adni", slices_per_subject=3)
    assert m["atrophy"] is True
    root = tmp_path / "AD_NC"
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/*")) == [
        "test/AD", "test/NC", "train/AD", "train/NC"]
    patients = {}
    for p in root.glob("*/*/*"):
        match = re.match(r"^(\d{6})_(\d+)\.jpeg$", p.name)
        assert match, p.name
        split, group = p.parent.parent.name, p.parent.name
        patients.setdefault(match.group(1), set()).add((split, group))
        assert m["labels"][match.group(1)] == group
    assert len(patients) == 4 and all(len(v) == 1 for v in patients.values())
    assert sorted(m["labels"].values()) == ["AD", "AD", "NC", "NC"]
    assert not set(m["splits"]["train"]) & set(m["splits"]["test"])
    assert len(list(root.glob("*/*/*.jpeg"))) == 4 * 3
    im = Image.open(next(root.glob("train/*/*.jpeg")))
    assert im.format == "JPEG" and im.mode == "L" and im.size == (256, 240)


def test_subjects_differ_but_share_anatomy(subject_pair):
    a, b = subject_pair
    assert a.shape == (32, 64, 64) and a.dtype == np.float32
    for k in (10, 16, 22):
        assert np.abs(a[k] - b[k]).mean() > 0.02
        assert np.corrcoef(a[k].ravel(), b[k].ravel())[0, 1] > 0.5


def test_looks_like_skull_stripped_brain(subject_pair):
    for vol in subject_pair:
        assert 0.0 <= vol.min() and vol.max() <= 1.0
        assert np.all(vol[:, :4, :4] == 0) and np.all(vol[:, -4:, -4:] == 0)
        for k in (10, 16, 22):
            brain = vol[k] > 0
            assert 0.2 < brain.mean() < 0.8
            lo, hi = np.percentile(vol[k][brain], [5, 95])
            assert hi - lo > 0.3 and hi > 0.6
        assert (vol[0] > 0).mean() < (vol[16] > 0).mean()  # the lowest slice is small


def test_atrophy_darkens_brain():
    for index in (0, 1):
        normal = render_subject(index, size=64)
        atrophic = render_subject(index, size=64, atrophy=True)
        dark = lambda v: ((v > 0) & (v < 0.3)).sum() / (v > 0).sum()
        assert dark(atrophic[8:24]) > dark(normal[8:24]) + 0.02


@pytest.mark.parametrize("kwargs, value", [
    ({"subjects": 2}, "2"),
    ({"size": 40}, "40"),
    ({"size": 16}, "16"),
    ({"layout": "nifti"}, "nifti"),
    ({"slices_per_subject": 0}, "0"),
])
def test_bad_arguments(tmp_path, kwargs, value):
    args = {"subjects": 4, "size": 64, **kwargs}
    with pytest.raises(BrainVQError, match=re.escape(value)):
        build_cohort(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_render_subject_checks_size():
    with pytest.raises(BrainVQError, match="50"):
        render_subject(0, size=50)


def test_overwrite_protection(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BrainVQError, match="already holds 1 files"):
        build_cohort(tmp_path, subjects=3, size=32, slices_per_subject=2)
    build_cohort(tmp_path, subjects=3, size=32, slices_per_subject=2, overwrite=True)
    first = files_of(tmp_path)
    with pytest.raises(BrainVQError, match="overwrite=True"):
        build_cohort(tmp_path, subjects=3, size=32, slices_per_subject=2, seed=1)
    build_cohort(tmp_path, subjects=3, size=32, slices_per_subject=2, seed=1, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert len(files_of(tmp_path)) == len(first) == 3 * 2
    assert files_of(tmp_path) != first


def test_demo_size_constant():
    assert isinstance(DEMO_SUBJECTS, int) and DEMO_SUBJECTS >= 50
