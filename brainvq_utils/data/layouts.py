"""The layouts a data folder may hold, how they are found, and how each is read into three splits.

``load_dataset(layout, root)`` returns a :class:`~brainvq_utils.data.splits.BrainDataset` with three
splits (train, validate, test). Layouts (see DESIGN.md, section Data):

* ``oasis``     ``keras_png_slices_{train,validate,test}/case_XXX_slice_N.nii.png`` (splits by case);
* ``adni``      ``AD_NC/{train,test}/<class>/PATIENT_SLICE.jpeg``; validation is carved out of train
  by patient id (seeded, stratified by class), never by slice; class folders are read by name
  (``CLASS_SYNONYMS``: ``CN`` is ``NC``);
* ``folder``    any folder of PNG/JPEG slices, split at random by file (seeded);
* ``nifti``     a folder of ``.nii``/``.nii.gz`` volumes, sliced axially, split by volume;
* ``synthetic`` the embedded MNI152-derived cohort, written in the oasis (or adni) layout with a
  ``cohort.json`` beside it (build it with ``brainvq synth DIR``).

An oasis or adni layout is found in the folder given or up to two folders below it (``locate``),
as course zips unpack. Every file name is parsed whole by its layout's scheme, or refused naming
the file: a name that half-parses would invent a patient or a slice level without a word.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import BrainVQError
from .checks import _files_in, _is_image_name, _is_nifti_name, _listing, _screen, _visible, duplicate_files, shown, stray_slices
from .names import _class_folders, _folder_names, class_of, parse_adni_name, parse_oasis_name
from .splits import SPLITS, BrainDataset, _make_split, _seeded_split
from .stream import _volume_header

LAYOUTS = ("auto", "oasis", "adni", "folder", "nifti", "synthetic")
OASIS_DIRS = tuple(f"keras_png_slices_{s}" for s in SPLITS)


# ----------------------------------------------------------------------------- finding the layout
@dataclass(frozen=True)
class Found:
    """Where a layout was found: its kind (oasis or adni), the folder that holds it, whether that
    folder is a synthetic cohort (``cohort.json`` beside it), and how many folders below the folder
    given it lies."""

    kind: str
    base: Path
    synthetic: bool = False
    depth: int = 0


SEARCH_DEPTH = 2   # course zips unpack one or two folders deep (keras_png_slices_data/keras_png_slices_data/)
LOOK_DEEPER = 6    # deeper layouts are not read, but named in the error, so nothing is read by mistake


def _adni_base(folder: Path, classes: bool = False) -> Path | None:
    """The folder that holds ADNI's train/ and test/ (``folder/AD_NC`` or ``folder``); with ``classes``,
    only where train/ holds a class folder brainvq knows (so that a folder of someone's own train/ and
    test/ slices, or the Kaggle data set, is not taken for ADNI by ``auto``)."""
    for base in (folder / "AD_NC", folder):
        if (base / "train").is_dir() and (base / "test").is_dir():
            if classes and not any(class_of(p.name) for p in _subfolders(base / "train")):
                continue
            return base
    return None


def _marker(folder: Path, depth: int = 0) -> Found | None:
    """The layout whose own folders lie directly in ``folder``, if any."""
    synthetic = (folder / "cohort.json").is_file()
    if any((folder / d).is_dir() for d in OASIS_DIRS):
        return Found("oasis", folder, synthetic, depth)
    base = _adni_base(folder, classes=True)
    return Found("adni", base, synthetic, depth) if base is not None else None


def _subfolders(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, links to folders included, except a link back to ``folder``
    or above it (a loop)."""
    try:
        here = folder.resolve()
        return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p, folder)
                      and not (p.is_symlink() and (here == p.resolve() or p.resolve() in here.parents)))
    except OSError:
        return []


def find_layouts(root: Path, depth: int = LOOK_DEEPER) -> list[Found]:
    """Every oasis or adni layout in ``root`` or up to ``depth`` folders below it (not inside a layout
    once found; hidden and ``__MACOSX`` folders skipped). Beside a layout, a folder that holds another
    one (``AD_NC - Copy/`` next to ``AD_NC/``) is found too."""
    found, level, seen = [], [root], set()
    for d in range(depth + 1):
        below = []
        for folder in level:
            if folder.resolve() in seen:     # reached twice through links
                continue
            seen.add(folder.resolve())
            hit = _marker(folder, d)
            if hit is None:
                below += _subfolders(folder)
                continue
            found.append(hit)
            own = {hit.base, *(folder / name for name in OASIS_DIRS)}
            for other in _subfolders(folder):       # a second copy beside the first
                twin = _marker(other, d + 1) if other not in own else None
                if twin is not None and twin.base not in own:
                    found.append(twin)
        level = below
    return found


def _where(found: Found, root: Path) -> str:
    rel = found.base.relative_to(root) if found.base != root else Path(".")
    return "the folder given" if str(rel) == "." else f"{rel}/"


def locate(root, layout: str = "auto") -> Found | str:
    """The layout to read at ``root``: a :class:`Found` for oasis/adni/synthetic (searched up to
    ``SEARCH_DEPTH`` folders down), else "nifti" or "folder". Two data sets in one folder, a layout
    deeper than ``SEARCH_DEPTH``, or a folder or nifti layout over a folder that holds an oasis or adni
    layout, stop with one line."""
    root = _root(root)
    found = find_layouts(root)
    near = [f for f in found if f.depth <= SEARCH_DEPTH]
    wanted = {"oasis": ("oasis",), "adni": ("adni",), "synthetic": ("oasis", "adni"),
              "auto": ("oasis", "adni")}.get(layout, ())
    matches = [f for f in near if f.kind in wanted]
    if len(matches) > 1:
        where = " and ".join(f"{f.kind} at {_where(f, root)}" for f in matches[:4])
        raise BrainVQError(f"{root} holds more than one data set ({where}); pass the folder of the one to use "
                           f"as the data folder")
    if matches:
        return matches[0]
    deep = [f for f in found if f.kind in wanted or layout in ("folder", "nifti")]
    if deep and not near:
        f = deep[0]
        raise BrainVQError(f"{root} holds the {f.kind} layout at {_where(f, root)}, {f.depth} folders down (brainvq "
                           f"looks {SEARCH_DEPTH} down at most); pass {f.base.parent if f.base.name == 'AD_NC' else f.base} "
                           f"as the data folder")
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


# ----------------------------------------------------------------------------- reading each layout
def _root(root) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise BrainVQError(f"data folder {path} does not exist; check the path or set BRAINVQ_DATA_DIR")
    if not path.is_dir():
        raise BrainVQError(f"data folder {path} is a file, not a folder; pass the folder that holds "
                           f"the images")
    return path


SEG_DIRS = tuple(f"keras_png_slices_seg_{s}" for s in SPLITS)


def _load_oasis(root: Path, check, skip_bad, skipped, **_):
    missing = [d for d in OASIS_DIRS if not (root / d).is_dir()]
    if missing:
        other = "; it holds the adni layout: use the dataset adni" if _adni_base(root, classes=True) else ""
        raise BrainVQError(f"expected the oasis layout ({', '.join(d + '/' for d in OASIS_DIRS)}) under {root}, but "
                           f"{', '.join(d + '/' for d in missing)} {'is' if len(missing) == 1 else 'are'} missing; "
                           f"found: {_listing(root)}{other}")
    stray_slices(root, "the oasis layout reads only keras_png_slices_train/, _validate/ and _test/",
                 f"merge them into their split folder if they are not copies, or move the folder out of {root}",
                 allowed=OASIS_DIRS + SEG_DIRS)
    splits = {}
    for split, folder in zip(SPLITS, OASIS_DIRS):
        rows = _screen(_files_in(root / folder, split), check, skip_bad, skipped, parse=parse_oasis_name)
        splits[split] = _make_split(split, [(*row, None) for row in rows])
    masks = [d for d in SEG_DIRS if (root / d).is_dir()]
    return splits, ("splits by case as shipped (keras_png_slices_train/validate/test)"
                    + (f"; the segmentation masks in {', '.join(m + '/' for m in masks)} are not read" if masks else ""))


def _load_adni(root: Path, check, skip_bad, skipped, validate_fraction, seed, **_):
    base = _adni_base(root)
    if base is None:
        raise BrainVQError(f"expected the adni layout (AD_NC/train/{{AD,NC}}/, AD_NC/test/{{AD,NC}}/) "
                           f"under {root}, found: {_listing(root)}")
    if base != root:
        stray_slices(root, f"the adni layout reads only {base.name}/", f"move the folder out of {root}",
                     allowed=(base.name,))
    stray_slices(base, "the adni layout reads only train/ and test/",
                 f"merge them into train/ or test/ if they are not copies, or move the folder out of {base}",
                 allowed=("train", "test"))
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
                files = _screen(_files_in(d, f"{split} {d.name}"), check, skip_bad, skipped, parse=parse_adni_name)
                rows[split] += [(*row, label) for row in files]
        if not rows[split]:
            raise BrainVQError(f"{base / split} holds no class folder of slices; the {split} split needs at least "
                               f"one ({base.name}/{split}/AD/*.jpeg, {base.name}/{split}/NC/*.jpeg)")
        classes_of: dict[str, set] = {}
        for r in rows[split]:
            classes_of.setdefault(r[1], set()).add(r[3])
        both = sorted(p for p, c in classes_of.items() if len(c) > 1)
        if both:
            raise BrainVQError(f"patient {both[0]} has slices in the {' and '.join(sorted(classes_of[both[0]]))} "
                               f"folders of {base / split}{f' (and {len(both) - 1} more patients)' if len(both) > 1 else ''}; "
                               f"a patient has one diagnosis: remove the copies from the wrong class folder")
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
    return splits, "; ".join([f"classes {', '.join(labels)}; test as shipped ({base.name}/test); validation carved "
                              f"from train by patient id ({validate_fraction:.0%} of patients per class, seed {seed})",
                              *notes])


def _load_folder(root: Path, check, skip_bad, skipped, validate_fraction, test_fraction, seed, **_):
    files = sorted(str(p) for p in root.rglob("*") if p.is_file() and _is_image_name(p) and _visible(p, root))
    if not files:
        raise BrainVQError(f"found no PNG or JPEG images under {root} (sub-folders included), "
                           f"found: {_listing(root)}")
    rows, named = _folder_names(_screen(files, check, skip_bad, skipped), root)
    by_subject: dict[str, list] = {}
    for row in rows:
        by_subject.setdefault(row[1], []).append(row)
    val, test, train = _seeded_split(sorted(by_subject), [validate_fraction, test_fraction], seed)
    splits = {k: _make_split(k, [(*row, None) for subject in group for row in by_subject[subject]])
              for k, group in zip(SPLITS, (train, val, test))}
    return splits, (f"random split by subject ({validate_fraction:.0%} validate, {test_fraction:.0%} test, seed "
                    f"{seed}); {named}")


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


def _one_split_per_subject(splits: dict, root: Path) -> None:
    """Stop loading when one subject has slices in two splits (a case copied into the test folder, a
    patient id in both ADNI's train and test): the held-out scores would not be held out."""
    seen: dict[str, str] = {}
    for name, split in splits.items():
        for subject, f in zip(split.subjects, split.files):
            first = seen.setdefault(subject, name)
            if first != name:
                other = next(g for g, s in zip(splits[first].files, splits[first].subjects) if s == subject)
                where = " and ".join(str(Path(x).parent.relative_to(root)) + "/" for x in (other, f))
                raise BrainVQError(f"subject {subject} has slices in both the {first} and the {name} split of {root} "
                                   f"({where}); one person's slices must lie in one split only, or the held-out "
                                   f"scores are not held out: remove the copies (or rename one, if two people "
                                   f"share the id)")


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
    _one_split_per_subject(splits, path)
    labels = _cohort_labels(meta or {})
    if labels:
        splits = {k: replace(s, labels=tuple(labels.get(subj, y) for subj, y in zip(s.subjects, s.labels)))
                  for k, s in splits.items()}
    duplicates = tuple(duplicate_files([f for s in splits.values() for f in s.files]))
    if skipped:
        first = ", ".join(shown(Path(f).name) for f, _ in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} unreadable or misnamed file(s) under {path} (skip_bad; "
                      f"BrainDataset.skipped says why): {first}{' ...' if len(skipped) > 3 else ''}", stacklevel=2)
    return BrainDataset(name=name, layout="synthetic" if meta is not None else kind, root=str(path),
                        skipped=tuple(skipped), notes=notes, data_dir=str(given), duplicates=duplicates, **splits)
