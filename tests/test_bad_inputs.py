"""A corpus of bad and odd inputs (written by tests/bad_inputs.py at test time), one test each.

Every input is either loaded correctly, and the test checks its pixels, or refused with one line
(``BrainVQError``) that names the file or folder and says what to do; with ``skip_bad`` a bad image
among good ones is skipped and listed. Never a traceback from inside TensorFlow, Pillow or nibabel,
and never a hang (each test runs under an alarm).
"""

import os
import signal
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from bad_inputs import (TRAIN, bomb_png, cmyk_jpeg, gradient, jpeg_bytes, make_adni, make_nifti,  # noqa: E402
                        make_oasis, nifti, non_utf8_name, palette_png, png_bytes, truncate)

from brainvq_utils import data, pipeline  # noqa: E402
from brainvq_utils.errors import BrainVQError  # noqa: E402

SIZE = 32
RAMP = gradient()[..., None] / 255.0   # what a 32x32 grey ramp must load as


@pytest.fixture(autouse=True)
def no_hang():
    """Fail a test that takes more than 60 s instead of letting it hang the suite."""
    def alarm(signum, frame):
        raise TimeoutError("the data layer hung on this input")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def oasis(tmp_path):
    return make_oasis(tmp_path / "oasis")   # 2 train, 1 validate, 1 test case of 3 slices; with _seg_ folders


def add(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def pixels_of(ds, path: Path, split: str = "train") -> np.ndarray:
    """The image the pipeline makes of ``path`` (through tf.data, as training reads it)."""
    part = getattr(ds, split)
    i = part.files.index(str(path))
    return part.subset([i]).load(SIZE)[0]


def refused(root: Path, bad: Path, *words: str, layout: str = "oasis", good_train: int | None = 6):
    """``bad`` stops loading with one line naming it and the ``words``; with skip_bad it is skipped and
    listed, and the rest loads."""
    with pytest.raises(BrainVQError) as err:
        data.load_dataset(layout, root)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message, message
    for word in ("skip_bad", *words):
        assert word in message, (word, message)
    message.encode("utf-8")   # printable as it is
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = data.load_dataset(layout, root, skip_bad=True)
    assert [f for f, _ in ds.skipped] == [str(bad)]
    if good_train is not None:
        assert len(ds.train) == good_train
        x = ds.train.load(SIZE)
        assert x.shape == (good_train, SIZE, SIZE, 1) and np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1
    return message


# ----------------------------------------------------------------------------- broken image files
def test_zero_byte_file(oasis):
    refused(oasis, add(oasis / TRAIN, "case_009_slice_0.nii.png", b""), "is empty (0 bytes)")


def test_truncated_png(oasis):
    bad = truncate(add(oasis / TRAIN, "case_009_slice_0.nii.png", png_bytes(np.random.default_rng(0).integers(
        0, 256, (64, 64), dtype=np.uint8))))
    refused(oasis, bad, "cut short")


def test_truncated_jpeg(oasis):
    bad = truncate(add(oasis / TRAIN, "case_009_slice_0.nii.png", jpeg_bytes(np.random.default_rng(0).integers(
        0, 256, (64, 64), dtype=np.uint8))))
    refused(oasis, bad, "cut short")


def test_text_file_named_png(oasis):
    refused(oasis, add(oasis / TRAIN, "case_009_slice_0.nii.png", b"slice list:\ncase_001\n"),
            "cannot be read as an image")


def test_cmyk_jpeg(oasis):
    bad = add(oasis / TRAIN, "case_009_slice_0.nii.png", cmyk_jpeg())
    refused(oasis, bad, "CMYK JPEG", "convert('L')")


def test_image_above_the_decompression_bomb_limit(oasis):
    bad = add(oasis / TRAIN, "case_009_slice_0.nii.png", bomb_png(30000, 30000))
    refused(oasis, bad, "30000x30000 pixels", "resize it")


# ----------------------------------------------------------------------------- odd images that load
def test_16_bit_png_keeps_its_grey_levels(oasis):
    ramp16 = gradient().astype(np.uint16) * 257   # 0..65535
    path = add(oasis / TRAIN, "case_009_slice_0.nii.png", png_bytes(ramp16))
    np.testing.assert_allclose(pixels_of(data.load_dataset("oasis", oasis), path), RAMP, atol=1e-5)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_png_with_alpha_loads_its_grey(oasis, mode):
    grey = gradient()
    alpha = np.full_like(grey, 128)
    array = np.stack([grey, grey, grey, alpha] if mode == "RGBA" else [grey, alpha], -1)
    path = add(oasis / TRAIN, "case_009_slice_0.nii.png", png_bytes(array, mode))
    np.testing.assert_allclose(pixels_of(data.load_dataset("oasis", oasis), path), RAMP, atol=1e-5)


def test_palette_png_loads_the_greys_of_its_palette(oasis):
    path = add(oasis / TRAIN, "case_009_slice_0.nii.png", palette_png(gradient()))
    np.testing.assert_allclose(pixels_of(data.load_dataset("oasis", oasis), path), RAMP, atol=1e-5)


def test_progressive_jpeg(oasis):
    path = add(oasis / TRAIN, "case_009_slice_0.nii.png", jpeg_bytes(gradient(), progressive=True))
    assert b"\xff\xc2" in path.read_bytes()   # a progressive (SOF2) frame
    np.testing.assert_allclose(pixels_of(data.load_dataset("oasis", oasis), path), RAMP, atol=3 / 255)


def test_one_pixel_image_fills_the_frame(oasis):
    path = add(oasis / TRAIN, "case_009_slice_0.nii.png", png_bytes(np.full((1, 1), 200, np.uint8)))
    np.testing.assert_allclose(pixels_of(data.load_dataset("oasis", oasis), path), 200 / 255, atol=1e-5)


def test_slices_of_different_sizes_in_one_split(oasis):
    tall = add(oasis / TRAIN, "case_009_slice_0.nii.png", png_bytes(np.full((64, 32), 200, np.uint8)))
    wide = add(oasis / TRAIN, "case_009_slice_1.nii.png", png_bytes(np.full((32, 96), 100, np.uint8)))
    ds = data.load_dataset("oasis", oasis)
    x = ds.train.load(SIZE)
    assert x.shape == (8, SIZE, SIZE, 1)
    t, w = pixels_of(ds, tall)[..., 0], pixels_of(ds, wide)[..., 0]
    # kept in proportion and padded with black: the tall one to 16 columns, the wide one to 11 rows
    np.testing.assert_allclose(t[:, 9:23], 200 / 255, atol=1e-5)
    assert t[:, :7].max() == 0 and t[:, 25:].max() == 0
    np.testing.assert_allclose(w[12:20], 100 / 255, atol=1e-5)
    assert w[:9].max() == 0 and w[23:].max() == 0


# ----------------------------------------------------------------------------- names and folders
def test_non_utf8_file_name(oasis):
    bad = non_utf8_name(oasis / TRAIN)
    with pytest.raises(BrainVQError) as err:
        data.load_dataset("oasis", oasis)
    message = str(err.value)
    message.encode("utf-8")   # printable: the odd byte is shown escaped
    assert "case_009_slice_0\\xff.nii.png" in message and "not valid UTF-8" in message and "rename" in message
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = data.load_dataset("oasis", oasis, skip_bad=True)
    assert [f for f, _ in ds.skipped] == [str(bad)] and len(ds.train) == 6


def test_spaces_in_file_and_folder_names(tmp_path):
    root = make_oasis(tmp_path / "My Data" / "oasis 2024")
    ds = data.load_dataset("oasis", root)
    assert (len(ds.train), len(ds.validate), len(ds.test)) == (6, 3, 3)
    folder = tmp_path / "my scans"
    for i in range(5):
        add(folder / "subject one", f"scan {i}.png", png_bytes(gradient()))
    ds = data.load_dataset("folder", folder, validate_fraction=0.2, test_fraction=0.2)
    assert len(ds.train) + len(ds.validate) + len(ds.test) == 5
    np.testing.assert_allclose(ds.train.load(SIZE), np.stack([RAMP] * len(ds.train)), atol=1e-5)


@pytest.mark.parametrize("junk", [".DS_Store", "._case_001_slice_0.nii.png", "Thumbs.db", "desktop.ini",
                                  "__MACOSX/keras_png_slices_train/._case_001_slice_0.nii.png"])
def test_files_that_operating_systems_leave_behind_are_ignored(oasis, tmp_path, junk):
    add(oasis / (TRAIN if "/" not in junk else ""), junk, b"\x00\x05\x16\x07 Mac OS X resource fork")
    ds = data.load_dataset("oasis", oasis)
    assert len(ds.train) == 6 and not ds.skipped
    assert all("__MACOSX" not in f and "/." not in f for f in ds.train.files)
    # and in a plain folder of slices, where every image under the root is read
    folder = tmp_path / "slices"
    for i in range(5):
        add(folder, f"case_{i:03d}_slice_1.png", png_bytes(gradient()))
    add(folder / ("" if "/" not in junk else "x"), junk, b"\x00\x05\x16\x07")
    ds = data.load_dataset("folder", folder, validate_fraction=0.2, test_fraction=0.2)
    assert len(ds.train) + len(ds.validate) + len(ds.test) == 5 and not ds.skipped


def test_a_symlink_loop_does_not_hang(oasis, tmp_path):
    (oasis / TRAIN / "loop").symlink_to(oasis / TRAIN)
    (oasis / "again").symlink_to(oasis)
    ds = data.load_dataset("auto", oasis)
    assert len(ds.train) == 6
    folder = tmp_path / "slices"
    for i in range(5):
        add(folder, f"case_{i:03d}_slice_1.png", png_bytes(gradient()))
    (folder / "loop").symlink_to(folder)
    (folder / "a.png").symlink_to(folder / "b.png")   # a dangling link and a link cycle of files
    (folder / "b.png").symlink_to(folder / "a.png")
    ds = data.load_dataset("auto", folder, validate_fraction=0.2, test_fraction=0.2)
    assert len(ds.train) + len(ds.validate) + len(ds.test) == 5


def test_an_empty_split_folder(oasis):
    for f in (oasis / "keras_png_slices_validate").iterdir():
        f.unlink()
    with pytest.raises(BrainVQError, match=f"{oasis / 'keras_png_slices_validate'} is empty; the validate split "
                                           "needs its slice images there"):
        data.load_dataset("oasis", oasis)


def test_a_split_with_one_subject_loads_and_notebook_01_says_what_05_needs(oasis):
    ds = data.load_dataset("oasis", oasis)
    assert set(ds.test.subjects) == {"case_004"} and len(ds.test) == 3
    x = ds.test.load(SIZE)
    assert x.shape == (3, SIZE, SIZE, 1) and x.std() > 0.1   # three different random slices
    # the realism test of notebook 05 folds the held-out slices by subject: 01 says so before any training
    with pytest.raises(BrainVQError) as err:
        pipeline.check_held_out_subjects(ds, folds=2)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"the validate split of {oasis} holds 1 subject(s) (case_003) of 4")
    assert "realism_folds=2: add subjects" in message and "_fraction" not in message   # oasis: split as shipped
    two = data.load_dataset("oasis", make_oasis(oasis.parent / "two", cases={
        "train": ["case_001"], "validate": ["case_002", "case_003"], "test": ["case_004", "case_005"]}))
    pipeline.check_held_out_subjects(two, folds=2)            # two subjects each: enough for two folds
    with pytest.raises(BrainVQError, match="or lower -p realism_folds=2"):
        pipeline.check_held_out_subjects(two, folds=5)


def test_the_seg_masks_of_oasis_are_never_read_as_slices(oasis):
    assert any((oasis / "keras_png_slices_seg_train").iterdir())
    ds = data.load_dataset("auto", oasis)
    files = [f for split in ds.splits().values() for f in split.files]
    assert len(files) == 12
    assert {Path(f).parent.name for f in files} == {"keras_png_slices_train", "keras_png_slices_validate",
                                                     "keras_png_slices_test"}
    assert all(Path(f).name.startswith("case_") for f in files)   # the masks are seg_NNN_slice_Z.nii.png


@pytest.mark.parametrize("only", ["AD", "NC"])
def test_adni_with_one_class_only(tmp_path, only):
    root = make_adni(tmp_path / "adni", n_patients=4, slices=2, size=(64, 60))
    other = "NC" if only == "AD" else "AD"
    for split in ("train", "test"):
        for f in (root / "AD_NC" / split / other).iterdir():
            f.unlink()
        (root / "AD_NC" / split / other).rmdir()
    ds = data.load_dataset("adni", root, validate_fraction=0.25)
    assert {y for s in ds.splits().values() for y in s.labels} == {only}
    assert (len(ds.train), len(ds.validate), len(ds.test)) == (6, 2, 2)
    assert f"only {only}" in ds.notes
    x = ds.test.load(SIZE)
    assert np.isclose(x.max(), 200 / 255, atol=0.02) and x.min() == 0   # grey 200, padded to square


def test_a_data_folder_that_is_a_file(tmp_path):
    path = tmp_path / "oasis.zip"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(BrainVQError, match=f"data folder {path} is a file, not a folder; pass the folder"):
        data.load_dataset("auto", path)


def test_a_data_folder_that_is_not_there(tmp_path):
    with pytest.raises(BrainVQError, match=f"data folder {tmp_path / 'oasis'} does not exist; check the path"):
        data.load_dataset("oasis", tmp_path / "oasis")


# ----------------------------------------------------------------------------- NIfTI
def test_a_4d_nifti(tmp_path):
    root = make_nifti(tmp_path / "vols")
    bad = nifti(root / "fmri.nii.gz", np.ones((6, 6, 4, 3), np.float32))
    refused(root, bad, "is a 4-D volume", layout="nifti", good_train=None)


def test_an_all_zero_nifti_loads_as_black_slices(tmp_path):
    root = make_nifti(tmp_path / "vols")
    nifti(root / "sub-09.nii.gz", np.zeros((10, 12, 5), np.float32))
    ds = data.load_dataset("nifti", root, validate_fraction=0.2, test_fraction=0.2)
    split = next(s for s in ds.splits().values() if "sub-09" in s.subjects)
    idx = [i for i, s in enumerate(split.subjects) if s == "sub-09"]
    assert len(idx) == 5 and split.subset(idx).load(SIZE).max() == 0


def test_a_nifti_with_nan_loads_without_nan(tmp_path):
    root = make_nifti(tmp_path / "vols")
    vol = np.tile(np.linspace(1, 100, 12, dtype=np.float32), (10, 1))[..., None].repeat(5, -1)
    vol[2:4, 2:4, :] = np.nan
    nifti(root / "sub-09.nii.gz", vol)
    ds = data.load_dataset("nifti", root, validate_fraction=0.2, test_fraction=0.2)
    split = next(s for s in ds.splits().values() if "sub-09" in s.subjects)
    x = split.subset([i for i, s in enumerate(split.subjects) if s == "sub-09"]).load(SIZE)
    assert np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1
    assert x.max() > 0.9 and (x == 0).any()   # the ramp is scaled to [0, 1]; the NaN voxels are 0


@pytest.mark.parametrize("name", ["sub-09.nii.gz", "sub-09.nii"])
def test_a_nifti_cut_short(tmp_path, name):
    root = make_nifti(tmp_path / "vols")
    bad = nifti(root / name, np.random.default_rng(0).uniform(0, 1000, (40, 40, 30)).astype(np.float32))
    truncate(bad, 0.6)   # as an interrupted download leaves it
    refused(root, bad, "cut short", layout="nifti", good_train=None)
