"""How a layout's names are read: file names by their scheme (``CASE_slice_N.nii.png`` for OASIS,
``PATIENT_SLICE.jpeg`` for ADNI), whole or refused naming the file (a copy made by a file manager is
named as such), and ADNI's class folders by the names people give them (``CN`` is ``NC``)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BrainVQError
from .checks import _BadName, _is_image_name, _visible, shown

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


BIDS_SUBJECT = re.compile(r"^sub-[A-Za-z0-9]+$")   # a BIDS data set's subject folder (sub-01/ses-1/anat/...)


def _qualified(rows, root: Path) -> list:
    """Rows whose (subject, level) pairs repeat in two folders (``siteA/case_000_slice_0`` and
    ``siteB/case_000_slice_0``: two people who share a name) get their folder in the subject."""
    seen: dict = {}
    for f, subject, z in rows:
        seen.setdefault((subject, z), set()).add(Path(f).parent)
    if all(len(folders) == 1 for folders in seen.values()):
        return rows
    out = []
    for f, subject, z in rows:
        rel = Path(f).parent.relative_to(root)
        out.append((f, subject if str(rel) == "." else f"{rel}/{subject}", z))
    return out


def _folder_names(files, root: Path) -> tuple[list[tuple[str, str, int]], str]:
    """Rows (file, subject, slice) of the folder layout, and a note on what the subjects are. Subjects come
    from the names, in this order: every name ``CASE_slice_N``; every name ``PATIENT_SLICE`` with at
    least three patients, none holding half the files (``IMG_0001.jpg`` is no patient "IMG"); every file
    under a BIDS ``sub-XX/`` folder. A name pair that repeats in two folders is told apart by its folder.
    Otherwise the subjects are unknown and every file is a subject of its own, which the note says
    loudly: one person's slices may then lie in several splits. Slice levels come only from names that
    carry them, for every file or for none (one unknown level would turn the prior's level conditioning
    off for the whole run without a word)."""
    for scheme, parse in (("CASE_slice_N", parse_oasis_name), ("PATIENT_SLICE", parse_adni_name)):
        try:
            rows = [(f, *parse(Path(f))) for f in files]
        except _BadName:
            continue
        counts = {}
        for _, subject, _ in rows:
            counts[subject] = counts.get(subject, 0) + 1
        if scheme == "PATIENT_SLICE" and (len(counts) < 3 or max(counts.values()) * 2 > len(rows)):
            continue
        return _qualified(rows, root), f"subjects and slice levels read from the {scheme} names"
    bids = [next((part for part in Path(f).relative_to(root).parts[:-1] if BIDS_SUBJECT.match(part)), None)
            for f in files]
    if all(bids):
        return ([(f, subject, -1) for f, subject in zip(files, bids)],
                "subjects read from the BIDS sub-XX/ folders; slice levels unknown, so the prior is not conditioned on them")
    example = next((Path(f).name for f in files if not OASIS_NAME.match(Path(f).name)), Path(files[0]).name)
    return ([(f, str(Path(f).relative_to(root)), -1) for f in files],
            f"WARNING: subjects unknown ({example}, and maybe others, says neither the person nor the slice level), so every "
            f"file counts as a subject of its own and one person's slices may lie in several splits; name the "
            f"files CASE_slice_N.png, or put each person's slices under a sub-XX/ folder")


# ----------------------------------------------------------------------------- class folders (adni)
# ADNI's diagnostic groups, by the folder names people give them. Every folder in a split is read
# as the class it names, or loading stops naming the folder: slices are never left out silently.
CLASS_SYNONYMS = {
    "AD": ("Alzheimer", "Alzheimers", "Alzheimer's", "Dementia"),
    "NC": ("CN", "Normal", "Control", "Controls", "HC", "Healthy"),
    "MCI": (), "EMCI": (), "LMCI": (), "SMC": (),
}
# The class folders of the Kaggle "Alzheimer's Dataset" (from OASIS): its file names carry no patient id.
KAGGLE_CLASSES = ("nondemented", "verymilddemented", "milddemented", "moderatedemented")


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
            if label is None and p.name.strip().lower() in KAGGLE_CLASSES:
                raise BrainVQError(f"{p} is a class of the Kaggle \"Alzheimer's Dataset\", whose file names carry no "
                                   f"patient id, so it cannot be split by patient as the adni layout needs; use the "
                                   f"dataset folder (each file then counts as a subject of its own, which it says)")
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
