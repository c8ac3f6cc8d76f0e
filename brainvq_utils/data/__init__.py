"""The data layer: every supported layout of brain slices, read into the same objects.

``load_dataset(layout, root)`` returns a ``BrainDataset`` with three ``SliceSplit`` objects (train,
validate, test). A split holds only file names and per-image metadata; pixels are read when a split
is iterated. One module per concern:

* ``layouts``  the layouts (oasis, adni, folder, nifti, synthetic), how they are found (one or two
  folders below the folder given), and ``load_dataset``;
* ``names``    how file names (CASE_slice_N, PATIENT_SLICE) and ADNI class folders are read;
* ``checks``   the checks on every file before training (cut short, corrupt, empty, not an image,
  a CMYK JPEG, a NIfTI that is not one 3-D volume) and the files that are not data;
* ``splits``   ``SliceSplit``, ``LazyImages`` and ``BrainDataset``, and the views notebook 01 draws;
* ``stream``   the ``tf.data`` input pipeline: decode, resize and pad, cache, shuffle, batch.

The names below are the data layer's face: ``from brainvq_utils import data`` and ``data.load_dataset``.
"""

from .checks import IMAGE_SUFFIXES, JUNK_NAMES, NIFTI_SUFFIXES, duplicate_files, shown
from .layouts import LAYOUTS, OASIS_DIRS, SEARCH_DEPTH, Found, detect_layout, find_layouts, load_dataset, locate
from .names import ADNI_LABELS, CLASS_SYNONYMS, OASIS_NAME, PATIENT_SLICE, class_of, parse_adni_name, parse_oasis_name
from .splits import (IN_MEMORY_BELOW, SPLITS, BrainDataset, LazyImages, SliceSplit, format_summary,
                     one_slice_per_subject, subject_slices)
from .stream import (CACHE_IN_MEMORY_BELOW, SHUFFLE_BUFFER_BYTES, axial_slice, batches, check_image_size, image_hw,
                     read_volume, resolve_cache)

__all__ = ["ADNI_LABELS", "CACHE_IN_MEMORY_BELOW", "CLASS_SYNONYMS", "IMAGE_SUFFIXES", "IN_MEMORY_BELOW", "JUNK_NAMES",
           "LAYOUTS", "NIFTI_SUFFIXES", "OASIS_DIRS", "OASIS_NAME", "PATIENT_SLICE", "SEARCH_DEPTH",
           "SHUFFLE_BUFFER_BYTES", "SPLITS", "BrainDataset", "Found", "LazyImages", "SliceSplit", "axial_slice",
           "batches", "check_image_size", "class_of", "detect_layout", "duplicate_files", "find_layouts",
           "format_summary", "image_hw", "load_dataset", "locate", "one_slice_per_subject", "parse_adni_name",
           "parse_oasis_name", "read_volume", "resolve_cache", "shown", "subject_slices"]
