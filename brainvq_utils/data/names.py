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


def _folder_names(files, root: Path) -> tuple[list[tuple[str, str, int]], str]:
    """Rows (file, subject, slice) of the folder layout, and what the subjects are: the case and slice
    level of ``CASE_slice_N`` names when every name is one; otherwise the sub-folder a file lies in
    (a file directly in the folder is a subject of its own) and no level for any file. Never levels
    for some files only: one unknown level would turn the prior's slice-level conditioning off for
    the whole run without a word. (``PATIENT_SLICE`` is not read here: ``IMG_0001.jpg`` would make one
    patient "IMG" of every photo.)"""
    try:
        return [(f, *parse_oasis_name(Path(f))) for f in files], "subjects and slice levels read from the CASE_slice_N names"
    except _BadName:
        pass
    bad = next(Path(f).name for f in files if not OASIS_NAME.match(Path(f).name))
    rows = []
    for f in files:
        rel = Path(f).parent.relative_to(root)
        rows.append((f, str(rel) if str(rel) != "." else Path(f).name, -1))
    return rows, (f"slice levels unknown ({bad}, and maybe others, is not named CASE_slice_N), so no file's level "
                  f"is used and the prior is not conditioned on it; each sub-folder is a subject, and each file "
                  f"directly in the folder a subject of its own")


# ----------------------------------------------------------------------------- class folders (adni)
# ADNI's diagnostic groups, by the folder names people give them. Every folder in a split is read
# as the class it names, or loading stops naming the folder: slices are never left out silently.
CLASS_SYNONYMS = {
    "AD": ("Alzheimer", "Alzheimers", "Alzheimer's", "Dementia"),
    "NC": ("CN", "Normal", "Control", "Controls", "HC", "Healthy"),
    "MCI": (), "EMCI": (), "LMCI": (), "SMC": (),
}


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
