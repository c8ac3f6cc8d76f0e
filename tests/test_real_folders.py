"""Real folders and real habits (the data layer): course zips unpacked a folder too deep, files with
bytes after their end marker, ADNI's own class-folder names, copies made by file managers. Each case
was a silently wrong result or a refusal of a good file before; each test fails without its fix."""

import io
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from bad_inputs import TRAIN, gradient, jpeg_bytes, png_bytes  # noqa: E402
from PIL import Image  # noqa: E402
from test_data import make_adni, make_oasis, write_image  # noqa: E402

from brainvq_utils import data  # noqa: E402
from brainvq_utils.errors import BrainVQError  # noqa: E402

SIZE = 32


def decoded(path):
    """What Pillow makes of a file, as floats in [0, 1] (the reference the pipeline must match)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), np.float32) / 255.0


def pipeline_pixels(ds, path, split="train"):
    part = getattr(ds, split)
    return part.subset([part.files.index(str(path))]).load(SIZE)[0, ..., 0]


# ----------------------------------------------------------------------------- 1. the course zip, one folder too deep
def course_zip(root):
    """The OASIS course zip as it unpacks: keras_png_slices_data/keras_png_slices_data/{splits, seg splits}."""
    inner = make_oasis(root / "keras_png_slices_data" / "keras_png_slices_data")
    (root / "__MACOSX" / "keras_png_slices_data").mkdir(parents=True)
    return root / "keras_png_slices_data", inner


@pytest.mark.parametrize("layout", ["auto", "oasis"])
def test_the_oasis_zip_unpacked_a_folder_too_deep_is_found_and_its_masks_never_read(tmp_path, layout):
    outer, inner = course_zip(tmp_path)
    ds = data.load_dataset(layout, outer)
    assert ds.layout == "oasis" and ds.root == str(inner) and ds.data_dir == str(outer)
    assert (len(ds.train), len(ds.validate), len(ds.test)) == (6, 3, 3)
    files = [f for s in ds.splits().values() for f in s.files]
    assert all("_seg_" not in f and os.path.basename(f).startswith("case_") for f in files)
    assert not set(ds.train.subjects) & (set(ds.validate.subjects) | set(ds.test.subjects))
    assert "found the oasis layout in keras_png_slices_data/ below the folder given" in ds.notes
    assert "masks" in ds.notes and str(inner) in ds.describe()
    assert data.detect_layout(outer) == "oasis"


def test_two_folders_down_and_adni_inside_its_own_zip_folder(tmp_path):
    inner = make_oasis(tmp_path / "downloads" / "oasis" / "keras_png_slices_data")
    assert data.load_dataset("auto", tmp_path / "downloads").root == str(inner)
    adni = make_adni(tmp_path / "ADNI_AD_NC_2D")   # ADNI_AD_NC_2D/AD_NC/{train,test}/{AD,NC}
    for given in (tmp_path / "ADNI_AD_NC_2D", tmp_path / "ADNI_AD_NC_2D" / "AD_NC"):
        ds = data.load_dataset("adni", given)
        assert len(ds.test) == 4 and set(ds.train.labels) == {"AD", "NC"}
    ds = data.load_dataset("auto", adni)
    assert ds.layout == "adni" and "below the folder given" not in ds.notes


def test_a_data_folder_that_holds_two_data_sets_is_refused_naming_both(tmp_path):
    make_oasis(tmp_path / "data" / "oasis" / "keras_png_slices_data")
    make_adni(tmp_path / "data" / "adni")
    with pytest.raises(BrainVQError) as err:
        data.load_dataset("auto", tmp_path / "data")
    message = str(err.value)
    assert "\n" not in message and "more than one data set" in message
    assert "oasis at oasis/keras_png_slices_data/" in message and "adni at adni/" in message
    # naming the layout picks it
    assert data.load_dataset("adni", tmp_path / "data").layout == "adni"


def test_the_folder_layout_over_an_oasis_zip_is_refused_instead_of_reading_masks(tmp_path):
    outer, _ = course_zip(tmp_path)
    with pytest.raises(BrainVQError, match="holds the oasis layout at keras_png_slices_data/ .*masks.*use the "
                                           "dataset oasis"):
        data.load_dataset("folder", outer)


# ----------------------------------------------------------------------------- 2. bytes after the end marker
@pytest.mark.parametrize("name,content,pad", [
    ("case_009_slice_0.nii.png", "png", b"\0" * 4096),                   # zero padding after IEND (file recovery)
    ("case_009_slice_1.nii.png", "jpeg", bytes(range(256)) * 2),          # an exporter's trailer after EOI
    ("case_009_slice_2.nii.png", "progressive", b"\xff\xd8 trailer " * 40),   # a trailer that even holds SOI bytes
])
def test_a_complete_image_with_bytes_after_its_end_marker_loads(tmp_path, name, content, pad):
    root = make_oasis(tmp_path / "oasis")
    ramp = gradient()
    body = {"png": png_bytes(ramp), "jpeg": jpeg_bytes(ramp), "progressive": jpeg_bytes(ramp, progressive=True)}[content]
    padded, clean = root / TRAIN / name, root / TRAIN / name.replace("case_009", "case_010")
    padded.write_bytes(body + pad)
    clean.write_bytes(body)
    np.testing.assert_array_equal(decoded(padded), decoded(clean))    # Pillow reads the padded file whole
    ds = data.load_dataset("oasis", root)
    assert not ds.skipped
    np.testing.assert_array_equal(pipeline_pixels(ds, padded), pipeline_pixels(ds, clean))   # and so does TF
    assert abs(pipeline_pixels(ds, padded) - ramp / 255.0).max() < 4 / 255


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_file_cut_short_is_still_refused_whatever_its_tail_holds(tmp_path, fmt):
    root = make_oasis(tmp_path / "oasis")
    buf = io.BytesIO()
    exif = Image.Exif()
    Image.fromarray(gradient(64, 64)).save(buf, "PNG" if fmt == "png" else "JPEG", exif=exif)
    body = buf.getvalue()
    path = root / TRAIN / "case_009_slice_0.nii.png"
    path.write_bytes(body[:len(body) * 2 // 3])
    with pytest.raises(BrainVQError, match="is cut short"):
        data.load_dataset("oasis", root)


# ----------------------------------------------------------------------------- 3. class folders
def test_adni_control_folder_named_cn_is_read_as_nc(tmp_path):
    root = make_adni(tmp_path / "adni")
    for split in ("train", "test"):
        (root / "AD_NC" / split / "NC").rename(root / "AD_NC" / split / "CN")
    ds = data.load_dataset("adni", root)
    assert set(ds.train.labels) | set(ds.validate.labels) == {"AD", "NC"} and set(ds.test.labels) == {"AD", "NC"}
    assert len(ds.train) + len(ds.validate) == 24 and len(ds.test) == 4        # nothing dropped
    assert ds.classes()["test"] == {"AD": 2, "NC": 2}
    assert "train/CN/ as NC" in ds.notes and "NC 2" in ds.describe()
    assert ds.summary(max_images_for_stats=1)["labels"]["test"] == {"AD": 2, "NC": 2}


def test_an_unknown_class_folder_or_a_loose_slice_stops_loading_naming_it(tmp_path):
    root = make_adni(tmp_path / "adni")
    write_image(root / "AD_NC" / "train" / "old scans" / "1200_80.jpeg", fmt="JPEG")
    with pytest.raises(BrainVQError) as err:
        data.load_dataset("adni", root)
    assert "old scans is not a class folder" in str(err.value) and "CN" in str(err.value)
    (root / "AD_NC" / "train" / "old scans" / "1200_80.jpeg").rename(root / "AD_NC" / "train" / "1200_80.jpeg")
    (root / "AD_NC" / "train" / "old scans").rmdir()
    with pytest.raises(BrainVQError, match=r"holds 1 slice\(s\) outside any class folder \(1200_80.jpeg\)"):
        data.load_dataset("adni", root)


def test_adni_groups_beyond_ad_and_nc_are_classes_and_differences_between_train_and_test_are_named(tmp_path):
    root = make_adni(tmp_path / "adni")
    for p in range(3):
        for z in range(2):
            write_image(root / "AD_NC" / "train" / "MCI" / f"{3000 + p}_{80 + z}.jpeg", fmt="JPEG")
    ds = data.load_dataset("adni", root, validate_fraction=0.34)
    assert ds.classes()["train"].get("MCI", 0) + ds.classes()["validate"].get("MCI", 0) == 6
    assert "train and test hold different classes: only train has MCI" in ds.notes


@pytest.mark.parametrize("where", ["AD_NC/train/AD/backup", "AD_NC/backup", "AD_NC - Copy/train/AD"])
def test_a_folder_the_layout_does_not_read_or_a_second_copy_is_named(tmp_path, where):
    root = make_adni(tmp_path / "adni")
    write_image(root / where / "1000_80.jpeg", fmt="JPEG")
    if where.startswith("AD_NC - Copy"):
        (root / "AD_NC - Copy" / "test").mkdir()
    with pytest.raises(BrainVQError) as err:
        data.load_dataset("auto", root)
    message = str(err.value)
    assert "\n" not in message
    assert ("more than one data set" in message) if "Copy" in where else (f"{root / where} holds slices" in message)


def test_one_patient_in_two_classes_or_one_subject_in_two_splits_is_refused(tmp_path):
    root = make_adni(tmp_path / "adni")
    src = root / "AD_NC" / "train" / "AD" / "1000_80.jpeg"
    (root / "AD_NC" / "train" / "NC" / "1000_80.jpeg").write_bytes(src.read_bytes())
    with pytest.raises(BrainVQError, match="patient 1000 has slices in the AD and NC folders"):
        data.load_dataset("adni", root)
    (root / "AD_NC" / "train" / "NC" / "1000_80.jpeg").rename(root / "AD_NC" / "test" / "AD" / "1000_80.jpeg")
    with pytest.raises(BrainVQError, match=r"subject 1000 has slices in both the (train|validate) and the test split .*"
                                           r"AD_NC/(train|test)/AD/ and AD_NC/(train|test)/AD/"):
        data.load_dataset("adni", root)
    oasis = make_oasis(tmp_path / "oasis")
    for f in (oasis / TRAIN).glob("case_001_*"):
        (oasis / "keras_png_slices_test" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(BrainVQError, match="subject case_001 has slices in both the train and the test split"):
        data.load_dataset("oasis", oasis)


def test_a_layout_too_deep_or_a_missing_split_folder_is_named(tmp_path):
    inner = make_oasis(tmp_path / "data" / "downloads" / "keras_png_slices_data" / "keras_png_slices_data")
    for layout in ("auto", "oasis", "folder"):
        with pytest.raises(BrainVQError, match=f"at downloads/keras_png_slices_data/keras_png_slices_data/, 3 folders "
                                               f"down .* pass {inner} as the data folder"):
            data.load_dataset(layout, tmp_path / "data")
    for f in (inner / "keras_png_slices_validate").iterdir():
        f.unlink()
    (inner / "keras_png_slices_validate").rmdir()
    with pytest.raises(BrainVQError, match="keras_png_slices_validate/ is missing"):
        data.load_dataset("oasis", inner)


# ----------------------------------------------------------------------------- 4. file names
def test_a_windows_copy_of_an_adni_slice_is_named_not_made_into_a_patient(tmp_path):
    root = make_adni(tmp_path / "adni")
    original = root / "AD_NC" / "train" / "AD" / "1000_80.jpeg"
    copy = original.with_name("1000_80 (1).jpeg")
    copy.write_bytes(original.read_bytes())
    with pytest.raises(BrainVQError) as err:
        data.load_dataset("adni", root)
    message = str(err.value)
    assert str(copy) in message and "looks like a copy of 1000_80.jpeg" in message and "\n" not in message
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = data.load_dataset("adni", root, skip_bad=True)
    assert [f for f, _ in ds.skipped] == [str(copy)]
    assert all(z >= 0 for s in ds.splits().values() for z in s.slices)
    assert "AD" not in {s for split in ds.splits().values() for s in split.subjects}   # no made-up patient


@pytest.mark.parametrize("name", ["case_001_slice_0 - Copy.nii.png", "case_001_slice_0 copy.nii.png",
                                  "case_001_slice_0(1).nii.png", "scan.png"])
def test_oasis_names_parse_whole_or_are_refused(tmp_path, name):
    root = make_oasis(tmp_path / "oasis")
    bad = root / TRAIN / name
    bad.write_bytes(png_bytes(gradient()))
    with pytest.raises(BrainVQError, match="copy of case_001_slice_0.nii.png" if name != "scan.png"
                       else "is not named CASE_slice_N.nii.png"):
        data.load_dataset("oasis", root)


def test_byte_identical_files_are_reported(tmp_path):
    root = make_oasis(tmp_path / "oasis")
    src = root / TRAIN / "case_001_slice_0.nii.png"
    twin = root / "keras_png_slices_test" / "case_004_slice_7.nii.png"
    twin.write_bytes(src.read_bytes())
    ds = data.load_dataset("oasis", root)
    assert ds.duplicates == ((str(twin), str(src)),) or ds.duplicates == ((str(src), str(twin)),)
    assert "byte-identical" in ds.describe() and ds.summary(max_images_for_stats=1)["duplicate_groups"] == 1


def test_folder_layout_uses_levels_for_all_files_or_for_none_and_says_which(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(12):
        (folder / f"case_{i % 4}_slice_{10 + i}.png").write_bytes(png_bytes(gradient()))
    ds = data.load_dataset("folder", folder, validate_fraction=0.25, test_fraction=0.25)
    slices = [z for s in ds.splits().values() for z in s.slices]
    assert sorted(slices) == list(range(10, 22)) and "read from the CASE_slice_N names" in ds.notes
    assert not set(ds.train.subjects) & (set(ds.validate.subjects) | set(ds.test.subjects))   # split by case
    (folder / "case_3_slice_21 (1).png").write_bytes(png_bytes(gradient()))
    ds = data.load_dataset("folder", folder, validate_fraction=0.25, test_fraction=0.25)
    assert {z for s in ds.splits().values() for z in s.slices} == {-1}
    assert "subjects unknown (case_3_slice_21 (1).png" in ds.notes


def test_photos_named_img_nnnn_are_not_one_patient(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    for i in range(1, 11):
        (folder / f"IMG_{i:04d}.jpg").write_bytes(jpeg_bytes(gradient()))
    ds = data.load_dataset("auto", folder, validate_fraction=0.2, test_fraction=0.2)
    assert len({s for split in ds.splits().values() for s in split.subjects}) == 10      # not one patient "IMG"
    assert {z for s in ds.splits().values() for z in s.slices} == {-1}                    # 1..10 are not levels


# ----------------------------------------------------------------------------- folders of one's own (second trial)
def test_folder_subjects_come_from_names_bids_folders_or_are_said_to_be_unknown(tmp_path):
    flat = tmp_path / "flat"
    for p in range(12):
        for z in range(5):
            write_image(flat / f"sub{p:02d}_{z}.png")
    ds = data.load_dataset("folder", flat, validate_fraction=0.2, test_fraction=0.2)
    assert len({s for split in ds.splits().values() for s in split.subjects}) == 12      # patients, not files
    assert not set(ds.train.subjects) & set(ds.test.subjects) and "PATIENT_SLICE" in ds.notes
    bids = tmp_path / "bids"
    for p in range(6):
        for ses in (1, 2):
            write_image(bids / f"sub-{p:02d}" / f"ses-{ses}" / "anat" / f"scan{ses}.png")
    ds = data.load_dataset("folder", bids, validate_fraction=0.2, test_fraction=0.2)
    assert sorted({s for split in ds.splits().values() for s in split.subjects}) == [f"sub-{p:02d}" for p in range(6)]
    sites = tmp_path / "sites"
    for site in ("siteA", "siteB"):
        for z in range(3):
            write_image(sites / site / f"case_000_slice_{z}.png")
    ds = data.load_dataset("folder", sites, validate_fraction=0.2, test_fraction=0.2)
    assert sorted({s for split in ds.splits().values() for s in split.subjects}) == ["siteA/case_000", "siteB/case_000"]
    kaggle = tmp_path / "Alzheimer_s Dataset"
    for split in ("train", "test"):
        for cls in ("NonDemented", "MildDemented"):
            for i in range(3):
                write_image(kaggle / split / cls / f"{cls[:4].lower()}Dem{i}.jpg", fmt="JPEG")
    with pytest.raises(BrainVQError, match="Kaggle .*no patient id.*use the dataset folder"):
        data.load_dataset("adni", kaggle)
    ds = data.load_dataset("auto", kaggle)                        # not taken for ADNI: no ADNI class folder
    assert ds.layout == "folder" and "WARNING: subjects unknown" in ds.notes and "WARNING" in ds.describe()


def test_a_linked_folder_is_read_or_named_never_passed_over(tmp_path):
    elsewhere = make_oasis(tmp_path / "elsewhere")
    home = tmp_path / "home"
    home.mkdir()
    (home / "downloads").symlink_to(elsewhere)                    # the data lives on another disk
    assert data.load_dataset("auto", home).root == str(home / "downloads")
    root = make_oasis(tmp_path / "oasis")
    extra = tmp_path / "more"
    write_image(extra / "case_030_slice_0.nii.png")
    (root / TRAIN / "more").symlink_to(extra)
    with pytest.raises(BrainVQError, match=f"{root / TRAIN / 'more'} holds slices"):
        data.load_dataset("oasis", root)


def test_nearly_black_slices_stop_notebook_01_naming_the_cause(tmp_path):
    from brainvq_utils import pipeline
    root = tmp_path / "png16"
    for split, cases in (("train", 4), ("validate", 2), ("test", 2)):
        for c in range(cases):
            for z in range(2):
                path = root / f"keras_png_slices_{split}" / f"case_{split[:2]}{c}_slice_{z}.nii.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((np.random.default_rng(c).integers(0, 4096, (32, 32))).astype(np.uint16)).save(path)
    ds = data.load_dataset("oasis", root)
    summary = ds.summary(image_size=32, max_images_for_stats=8)
    with pytest.raises(BrainVQError, match="nearly black: the brightest pixel of 8 sampled slices is 0.06"):
        pipeline.check_brightness(ds, summary)
