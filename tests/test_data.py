"""Tests of brainvq_utils.data on tiny fixture folders written with Pillow and nibabel."""

import json
import os
import zlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from brainvq_utils import data  # noqa: E402
from brainvq_utils.errors import BrainVQError  # noqa: E402


# ----------------------------------------------------------------------------- fixture writers
def write_image(path, width=32, height=32, value=None, mode="L", fmt=None):
    """A small image whose pixels depend on the file name unless ``value`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    grey = rng.integers(0, 256, (height, width), dtype=np.uint8) if value is None \
        else np.full((height, width), value, np.uint8)
    if mode == "RGB":
        img = Image.fromarray(np.stack([grey] * 3, -1))
    elif mode == "RGBA":
        img = Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], -1))
    else:
        img = Image.fromarray(grey)
    img.save(path, fmt)
    return path


def make_oasis(root, cases=None):
    cases = cases or {"train": ["case_001", "case_002"], "validate": ["case_003"], "test": ["case_004"]}
    for split, ids in cases.items():
        for case in ids:
            for z in (0, 2, 10):
                write_image(root / f"keras_png_slices_{split}" / f"{case}_slice_{z}.nii.png")
                write_image(root / f"keras_png_slices_seg_{split}" / f"seg_{case[5:]}_slice_{z}.nii.png")
    return root


def make_adni(root, n_patients=6, slices=2, size=(256, 240)):
    for split, base in (("train", 1000), ("test", 5000)):
        n = n_patients if split == "train" else 1
        for label, offset in (("AD", 0), ("NC", 100)):
            for p in range(n):
                for z in range(slices):
                    write_image(root / "AD_NC" / split / label / f"{base + offset + p}_{80 + z}.jpeg",
                                *size, value=200, mode="RGB", fmt="JPEG")
    return root


def make_nifti(root, shapes=((10, 12, 5), (10, 12, 6), (8, 8, 4), (8, 8, 3))):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, shape in enumerate(shapes):
        vol = rng.uniform(0, 1000, shape).astype(np.float32)
        vol[0] = 0  # background
        nib.save(nib.Nifti1Image(vol, np.eye(4)), root / f"sub-{i:02d}.nii.gz")
    return root


@pytest.fixture
def oasis(tmp_path):
    return make_oasis(tmp_path / "oasis")


@pytest.fixture
def adni(tmp_path):
    return make_adni(tmp_path / "adni")


# ----------------------------------------------------------------------------- layouts
def test_oasis_counts_subjects_and_slices(oasis):
    ds = data.load_dataset("oasis", oasis)
    assert (len(ds.train), len(ds.validate), len(ds.test)) == (6, 3, 3)
    assert ds.train.subjects == ("case_001",) * 3 + ("case_002",) * 3
    assert ds.train.slices[:3] == (0, 2, 10)  # numeric order, not string order
    assert all("seg" not in f for s in ds.splits().values() for f in s.files)
    meta = ds.test.metadata()[0]
    assert meta == {"file": ds.test.files[0], "subject": "case_004", "slice": 0, "label": None,
                    "split": "test"}
    assert ds.name == ds.layout == "oasis" and os.path.isabs(ds.train.files[0])
    assert data.detect_layout(oasis) == "oasis"


@pytest.mark.parametrize("at_ad_nc", [False, True])
def test_adni_validation_by_patient_and_labels(adni, at_ad_nc):
    root = adni / "AD_NC" if at_ad_nc else adni
    ds = data.load_dataset("adni", root, validate_fraction=0.34, seed=3)
    assert len(ds.train) + len(ds.validate) == 24 and len(ds.test) == 4
    assert not set(ds.train.subjects) & set(ds.validate.subjects)
    assert {"AD", "NC"} == set(ds.validate.labels) == set(ds.train.labels)  # stratified
    for split in ds.splits().values():
        for f, y in zip(split.files, split.labels):
            assert f"/{y}/" in f
    assert ds.validate.subjects[0].isdigit() and ds.validate.slices[0] in (80, 81)
    again = data.load_dataset("adni", root, validate_fraction=0.34, seed=3)
    assert again.validate == ds.validate
    assert "patient" in ds.notes and data.detect_layout(root) == "adni"


def test_folder_random_split_by_subject(tmp_path):
    for i in range(20):
        write_image(tmp_path / "slices" / f"sub-{i // 2:02d}" / f"img{i}.png")   # 10 people (BIDS folders), 2 slices each
    (tmp_path / "slices" / "readme.txt").write_text("not an image, ignored in the folder layout")
    ds = data.load_dataset("auto", tmp_path / "slices", validate_fraction=0.2, test_fraction=0.2)
    assert ds.layout == "folder" and (len(ds.train), len(ds.validate), len(ds.test)) == (12, 4, 4)
    assert not set(ds.train.subjects) & (set(ds.validate.subjects) | set(ds.test.subjects))
    assert set(ds.train.slices) == {-1} and "random split by subject" in ds.notes and "BIDS" in ds.notes
    files = sorted(f for s in ds.splits().values() for f in s.files)
    assert len(set(files)) == 20
    assert data.load_dataset("folder", tmp_path / "slices", validate_fraction=0.2,
                             test_fraction=0.2).test == ds.test


def test_nifti_slices_split_by_volume_and_stream(tmp_path):
    root = make_nifti(tmp_path / "vols")
    ds = data.load_dataset("auto", root, validate_fraction=0.25, test_fraction=0.25)
    assert ds.layout == "nifti"
    assert sum(len(s) for s in ds.splits().values()) == 5 + 6 + 4 + 3
    subjects = [set(s.subjects) for s in ds.splits().values()]
    assert [len(s) for s in subjects] == [2, 1, 1] and len(set.union(*subjects)) == 4
    assert "#z=" in ds.train.files[0] and ds.train.slices[:2] == (0, 1)
    x = ds.train.load(16)
    assert x.shape == (len(ds.train), 16, 16, 1) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    vol = data.read_volume(str(root / "sub-00.nii.gz"))
    assert vol.dtype == np.uint8 and vol.max() == 255 and vol[0].max() == 0


def test_nifti_axial_axis_follows_orientation(tmp_path):
    affine = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)  # axis 1 is S
    (tmp_path / "v").mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 7, 5), np.float32), affine), tmp_path / "v" / "a.nii")
    ds = data.load_dataset("nifti", tmp_path / "v", validate_fraction=0, test_fraction=0)
    assert len(ds.train) == 7 and data.read_volume(ds.train.files[0].split("#")[0]).shape == (4, 5, 7)


def test_synthetic_reads_cohort_json(tmp_path):
    root = make_oasis(tmp_path / "syn")
    labels = {"case_001": "NC", "case_002": "AD", "case_003": "NC", "case_004": "AD"}
    (root / "cohort.json").write_text(json.dumps({"name": "synthetic (MNI152-derived)", "labels": labels}))
    ds = data.load_dataset("synthetic", root)
    assert ds.name == "synthetic (MNI152-derived)" and ds.layout == "synthetic"
    assert ds.train.labels == ("NC",) * 3 + ("AD",) * 3
    assert data.detect_layout(root) == "synthetic"
    assert data.load_dataset("auto", root).name == ds.name
    with pytest.raises(BrainVQError, match="brainvq synth"):
        data.load_dataset("synthetic", tmp_path / "nowhere")


# ----------------------------------------------------------------------------- the pipeline
def test_pipeline_pads_adni_shape_and_range(adni):
    split = data.load_dataset("adni", adni).test
    batch = next(iter(split.dataset(128, batch_size=4)))
    assert batch.shape == (4, 128, 128, 1) and batch.dtype.name == "float32"
    x = batch.numpy()
    assert x.min() >= 0 and x.max() <= 1
    assert np.all(x[:, :3] == 0) and np.all(x[:, -3:] == 0)  # 240 rows scaled to 120, padded by 4
    assert np.allclose(x[:, 10:-10], 200 / 255, atol=0.02)
    full = split.load(256)
    assert full.shape == (4, 256, 256, 1) and np.all(full[:, :8] == 0) and full[:, 8:248].min() > 0.7
    assert split.load((64, 32), limit=2).shape == (2, 64, 32, 1)


@pytest.mark.parametrize("cache", [None, "memory"])
def test_shuffle_is_seeded_and_targets_are_pairs(oasis, cache):
    split = data.load_dataset("oasis", oasis).train

    def order(seed):
        ds = split.dataset(16, batch_size=6, shuffle=True, seed=seed, cache=cache)
        return [float(v) for v in next(iter(ds)).numpy().mean(axis=(1, 2, 3))]

    plain = sorted(float(v) for v in split.load(16).mean(axis=(1, 2, 3)))
    assert order(1) == order(1) and sorted(order(1)) == pytest.approx(plain)
    assert order(1) != order(2) or order(1) != order(3)
    x, y = next(iter(split.dataset(16, batch_size=4, with_targets=True)))
    assert x.shape == (4, 16, 16, 1) and np.array_equal(x.numpy(), y.numpy())
    sizes = [b.shape[0] for b in split.dataset(16, batch_size=4, drop_remainder=True, cache=cache)]
    assert sizes == [4]


def test_cache_auto_streams_above_threshold_and_file_caches_on_request(oasis, tmp_path, monkeypatch):
    split = data.load_dataset("oasis", oasis).train
    monkeypatch.setattr(data.SliceSplit, "load", lambda *a, **k: pytest.fail("dataset() called load()"))
    assert data.resolve_cache("auto", 30_000, 256, cache_dir=tmp_path / "big") is None   # ADNI-size: streamed
    assert not (tmp_path / "big").exists()
    assert data.resolve_cache("auto", 10, 16) == "memory"
    target = data.resolve_cache("file", 10, 16, cache_dir=tmp_path / "c")
    assert target.startswith(str(tmp_path / "c"))
    whole = np.concatenate(list(split.dataset(16, batch_size=2, cache=None)))
    streamed = split.dataset(16, batch_size=2, shuffle=True, cache="auto", cache_threshold_bytes=1)
    first, second = (np.concatenate(list(streamed)) for _ in range(2))
    assert len(first) == len(whole) == 6 and not np.array_equal(first, second)     # a new order every epoch
    np.testing.assert_array_equal(np.sort(first.reshape(6, -1), 0), np.sort(whole.reshape(6, -1), 0))
    cache_dir = tmp_path / "cache"
    ds = split.dataset(16, batch_size=2, repeat=False, cache="file", cache_dir=cache_dir)
    assert sum(b.shape[0] for b in ds) == 6
    assert any(cache_dir.iterdir())


def test_odd_images_decode_to_one_grey_channel(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    Image.fromarray(np.full((20, 20), 32768, np.uint16)).save(d / "deep_0.png")  # 16-bit
    write_image(d / "rgba_1.png", 20, 20, value=51, mode="RGBA")
    write_image(d / "rgb_2.jpg", 20, 20, value=102, mode="RGB", fmt="JPEG")
    write_image(d / "grey_3.png", 20, 20, value=255)
    ds = data.load_dataset("folder", d, validate_fraction=0, test_fraction=0)
    x = ds.train.load(20)
    means = dict(zip((os.path.basename(f).split("_")[0] for f in ds.train.files), x.mean(axis=(1, 2, 3))))
    assert x.shape == (4, 20, 20, 1) and x.dtype == np.float32
    assert means["deep"] == pytest.approx(32768 / 65535, abs=1e-4)
    assert means["rgba"] == pytest.approx(0.2, abs=1e-4)
    assert means["rgb"] == pytest.approx(0.4, abs=0.01)
    assert means["grey"] == pytest.approx(1.0)


def test_check_image_size():
    assert data.check_image_size(128, 8) == (128, 128)
    assert data.check_image_size((96, 64), 4) == (96, 64)
    with pytest.raises(BrainVQError, match="image size 100 is not divisible by the VQ-VAE "
                                           "downsampling factor 8; use e.g. 96 or 104"):
        data.check_image_size(100, 8)
    with pytest.raises(BrainVQError, match="not valid"):
        data.check_image_size("big", 8)


def test_dataset_checks_factor_and_empty_split(oasis):
    ds = data.load_dataset("oasis", oasis)
    with pytest.raises(BrainVQError, match="100 is not divisible"):
        ds.train.dataset(100, factor=8)
    with pytest.raises(BrainVQError, match="validate split is empty"):
        ds.validate.subset([]).dataset(16)


def test_summary(adni):
    s = data.load_dataset("adni", adni, validate_fraction=0.34).summary(image_size=64,
                                                                         max_images_for_stats=5)
    assert {"name", "layout", "root", "notes", "images", "subjects", "shared_subjects", "labels",
            "native_sizes", "intensity", "skipped", "skipped_files", "image_size"} <= set(s)
    assert s["images"]["test"] == 4 and s["labels"]["test"] == {"AD": 2, "NC": 2}
    assert s["shared_subjects"]["train/validate"] == 0 and s["native_sizes"] == {"240x256": 14}
    stats = s["intensity"]["train"]
    assert stats["sampled_images"] == 5 and 0 < stats["zero_fraction"] < 0.1
    assert 0.5 < stats["mean"] < 0.8 and stats["std"] > 0


# ----------------------------------------------------------------------------- bad input
def cmyk_jpeg() -> bytes:
    """A valid CMYK JPEG (Pillow reads it; TensorFlow's decoder stops on it)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 0, 0, 128)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["corrupt", "empty", "text", "cmyk"])
def test_bad_file_names_the_file(oasis, kind):
    folder = oasis / "keras_png_slices_train"
    bad = folder / {"corrupt": "case_009_slice_0.nii.png", "empty": "case_009_slice_1.nii.png",
                    "text": "notes.txt", "cmyk": "case_009_slice_2.nii.png"}[kind]
    bad.write_bytes({"corrupt": b"\x89PNG\r\n\x1a\n garbage", "empty": b"", "text": b"hello",
                     "cmyk": cmyk_jpeg() if kind == "cmyk" else b""}[kind])
    with pytest.raises(BrainVQError, match=str(bad) + ("" if kind != "cmyk" else " is a CMYK JPEG")) as err:
        data.load_dataset("oasis", oasis)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = data.load_dataset("oasis", oasis, skip_bad=True)
    assert [f for f, _ in ds.skipped] == [str(bad)] and len(ds.train) == 6
    assert ds.summary(max_images_for_stats=1)["skipped"] == 1


def test_bad_nifti_files_name_the_file(tmp_path):
    root = make_nifti(tmp_path / "vols", shapes=((6, 6, 4), (6, 6, 4)))
    (root / "broken.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(BrainVQError, match="broken.nii.gz"):
        data.load_dataset("nifti", root)
    (root / "broken.nii.gz").unlink()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), root / "four.nii")
    with pytest.raises(BrainVQError, match="four.nii is a 4-D volume"):
        data.load_dataset("nifti", root)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(data.load_dataset("nifti", root, skip_bad=True).skipped) == 1


def test_layout_mismatch_missing_and_file_roots(tmp_path, oasis):
    other = tmp_path / "other"
    (other / "foo").mkdir(parents=True)
    (other / "bar.txt").write_text("x")
    with pytest.raises(BrainVQError, match=r"expected the oasis layout \(keras_png_slices_train/.*"
                                           r"found: bar.txt, foo/"):
        data.load_dataset("oasis", other)
    with pytest.raises(BrainVQError, match="expected the adni layout.*found: bar.txt, foo/"):
        data.load_dataset("adni", other)
    with pytest.raises(BrainVQError, match="cannot tell the data layout.*bar.txt"):
        data.load_dataset("auto", other)
    with pytest.raises(BrainVQError, match="found no .nii"):
        data.load_dataset("nifti", other)
    with pytest.raises(BrainVQError, match="found no PNG or JPEG"):
        data.load_dataset("folder", other)
    with pytest.raises(BrainVQError, match=f"{tmp_path / 'missing'} does not exist"):
        data.load_dataset("oasis", tmp_path / "missing")
    with pytest.raises(BrainVQError, match=f"{other / 'bar.txt'} is a file, not a folder"):
        data.load_dataset("folder", other / "bar.txt")
    with pytest.raises(BrainVQError, match="unknown data layout 'brats'; use one of: auto, oasis, adni"):
        data.load_dataset("brats", oasis)
    for f in (oasis / "keras_png_slices_test").iterdir():
        f.unlink()
    with pytest.raises(BrainVQError, match=f"{oasis / 'keras_png_slices_test'} is empty"):
        data.load_dataset("oasis", oasis)


def test_bad_fractions(oasis):
    with pytest.raises(BrainVQError, match="validate_fraction"):
        data.load_dataset("folder", oasis, validate_fraction=0.6, test_fraction=0.5)
    with pytest.raises(BrainVQError, match="unknown check"):
        data.load_dataset("oasis", oasis, check="deep")


def test_lazy_images_read_only_what_is_asked_and_stream_in_chunks(tmp_path):
    from brainvq_utils.data import LazyImages, load_dataset
    from brainvq_utils.synthetic import build_cohort

    build_cohort(tmp_path, subjects=4, size=32, workers=1)
    split = load_dataset("oasis", tmp_path).train
    whole = split.load(32)
    lazy = split.lazy(32, chunk=10)
    assert isinstance(lazy, LazyImages) and len(lazy) == len(whole) and lazy.shape == whole.shape
    idx = np.array([5, 0, 5, len(whole) - 1])
    np.testing.assert_array_equal(lazy[idx], whole[idx])                # in the order asked, repeats too
    np.testing.assert_array_equal(lazy[3], whole[3])
    starts = [(start, len(images)) for start, images in lazy.chunks()]
    assert starts == [(s, min(10, len(whole) - s)) for s in range(0, len(whole), 10)]
    np.testing.assert_array_equal(np.concatenate([images for _, images in lazy.chunks()]), whole)
    assert isinstance(split.images(32), np.ndarray)                    # small: one array
    assert isinstance(split.images(32, in_memory_below=1024), LazyImages)   # large: read in chunks
