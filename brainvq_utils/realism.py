"""Realism: can a classifier tell generated slices from real ones?

Nearest-neighbour SSIM asks whether each sample looks like *some* training slice; most of
every slice is black background, so a blank image can score 0.87. The scores here ask
whether the generated set as a whole is distributed like real slices, and they can fail.

- **Classifier two-sample test** (Lopez-Paz & Oquab 2017, "Revisiting Classifier
  Two-Sample Tests"): a classifier, trained from scratch, learns to tell set A from set B;
  its held-out AUC says how far apart they are (0.5: indistinguishable, 1.0: always told
  apart). Folds are grouped by subject (k-fold, stratified by set), so no person's slices
  sit on both sides of a fold, and every image is scored by a classifier that never saw
  it. Every image is quantised to 8 bits first, as the real slices are. The confidence
  intervals are percentiles of a bootstrap over subjects (groups) of the held-out scores.
  The classifier is a logistic regression on ``texture_features``: filter-response,
  grey-level and shape statistics inside the brain mask, and the coarse layout. On the
  demo's slices it tells a 0.6-pixel blur from real slices with AUC 1.0; a small CNN trained
  from scratch within the same minute was much weaker (issue 8's closing note).
- **Precision and recall** (Kynkaanniemi et al. 2019, "Improved Precision and Recall
  Metric for Assessing Generative Models"): each set's manifold in a feature space is the
  union of balls around its points, each ball reaching the point's k-th nearest neighbour;
  precision is the share of generated points inside the real manifold, recall the share
  of real points inside the generated one. The feature space (``FeatureSpace``) is fitted
  on real training slices only: ``texture_features``, standardised, on their principal axes.
  In it every decoded image sits apart from real slices (the decoder's footprint), so
  notebook 05 judges the prior alone against the reconstructions, as the AUC does.
- **Brain masks**: a pixel is brain when it is brighter than ``BRAIN_LEVEL`` (real
  backgrounds are exactly 0); holes are filled. An image whose brain covers less than
  ``EMPTY_FRACTION`` of it is *empty*: it never counts as good or as memorised.
- **Per-position fidelity**: each sample asked for at slice position p against the real
  training slices at p only (masked SSIM), beside held-out real slices scored the same way.
"""

from __future__ import annotations

import time

import numpy as np

from . import progress
from .errors import BrainVQError
from .images import as_images
from .metrics import BRAIN_LEVEL, brain_masks

EMPTY_FRACTION = 0.01    # an image with less brain than this share of its pixels is empty
FOLDS = 5


# ----------------------------------------------------------------------------- images
def quantize_8bit(images) -> np.ndarray:
    """Images in [0, 1] rounded to the 256 grey levels of an 8-bit file, as float32."""
    arr = np.asarray(images)
    if arr.dtype.kind in "biuO":          # uint8 is scaled, other integer types refused (images.as_images)
        arr = as_images(arr, "images")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise BrainVQError("images hold NaN or infinite values; check the decoder's output")
    return (np.round(np.clip(arr, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def brain_fraction(images, level: float = BRAIN_LEVEL) -> np.ndarray:
    """Share of each image's pixels that are brain (``metrics.brain_masks``)."""
    masks = brain_masks(as_images(images, "images"), level)
    return masks.reshape(len(masks), -1).mean(axis=1)


def empty_images(images, min_fraction: float = EMPTY_FRACTION) -> np.ndarray:
    """(N,) bool: images with almost no brain (blank, or a speck)."""
    return brain_fraction(images) < min_fraction


# ----------------------------------------------------------------------------- AUC and intervals
def auc(labels, scores) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a
    random negative (ties count half); the Mann-Whitney U statistic over n1 * n0."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if not n1 or not n0:
        raise BrainVQError("AUC needs images of both sets")
    from scipy.stats import rankdata
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def grouped_bootstrap(labels, scores, groups, statistic, n_boot: int = 500, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic(labels, scores)`` over resamples of whole groups
    (subjects), since slices of one subject are not independent."""
    labels, scores, groups = np.asarray(labels), np.asarray(scores), np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        if labels[idx].all() or not labels[idx].any():
            continue
        values.append(statistic(labels[idx], scores[idx]))
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def accuracy(labels, scores, threshold: float = 0.5) -> float:
    return float(((np.asarray(scores) > threshold) == np.asarray(labels).astype(bool)).mean())


# ----------------------------------------------------------------------------- the classifier
def texture_features(images) -> np.ndarray:
    """(N, F) statistics of each image that a generator has to get right, quantised to 8 bits
    first: inside the brain mask, the distribution (mean, spread, percentiles, tail weight)
    of nine filter responses (the residual after a small blur, the two pixel differences,
    and the gradient magnitude and Laplacian of Gaussian at three scales), the grey-level
    histogram; the mask's area, edge length and number of pieces; and the image averaged
    over 8 x 8 blocks (where things are)."""
    from scipy import ndimage

    arr = quantize_8bit(as_images(images, "images"))[..., 0].astype(np.float64)
    if arr.shape[1] < 16 or arr.shape[2] < 16:
        raise BrainVQError(f"images of {arr.shape[1:]} pixels are too small for the realism score; use 16 or more")
    out = []
    for x in arr:
        inside = ndimage.binary_fill_holes(x > BRAIN_LEVEL)
        mask = inside if inside.sum() >= 16 else np.ones_like(inside)   # empty: score the whole image
        maps = [x - ndimage.gaussian_filter(x, 1.0), np.diff(x, axis=0, append=0), np.diff(x, axis=1, append=0)]
        for sigma in (0.7, 1.4, 2.8):
            maps += [ndimage.gaussian_gradient_magnitude(x, sigma), ndimage.gaussian_laplace(x, sigma)]
        row = []
        for r in maps:
            v = r[mask]
            a = np.abs(v)
            row += [a.mean(), a.std(), *np.percentile(a, [10, 50, 90, 99]), (v**4).mean() / max(v.var() ** 2, 1e-12)]
        grey = x[mask]
        row += [*(np.histogram(grey, bins=16, range=(0.0, 1.0))[0] / grey.size), grey.mean(), grey.std()]
        edge = inside ^ ndimage.binary_erosion(inside)
        row += [inside.mean(), edge.sum() / max(inside.sum(), 1), ndimage.label(inside)[1],
                ndimage.label(x > BRAIN_LEVEL)[1]]
        h, w = x.shape[0] // 8 * 8, x.shape[1] // 8 * 8
        row += list(x[:h, :w].reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3)).ravel())
        out.append(row)
    return np.asarray(out, np.float64).reshape(len(arr), -1)


def make_classifier(seed: int = 0):
    """Standardised features into an L2-regularised logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))


def _folds(labels, groups, k: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def two_sample_test(set_a, set_b, groups_a, groups_b, folds: int = FOLDS, seed: int = 0, name: str = "",
                    features_a=None, features_b=None) -> dict:
    """Held-out AUC and accuracy of a classifier trained to tell ``set_b`` (label 1) from ``set_a``.

    Every image is quantised to 8 bits and described by ``texture_features`` (pass
    ``features_a``/``features_b`` to reuse them); ``groups_a``/``groups_b`` name each image's
    subject, and the ``folds`` folds (stratified by set) never split a subject. Each fold
    fits a fresh classifier (``make_classifier``) and scores its held-out images. Returns
    ``auc``, ``auc_low``/``auc_high`` (95% bootstrap over subjects), ``accuracy`` (and its
    interval), ``n_a``, ``n_b``, ``folds``, ``seconds`` and ``scores``: every image's
    held-out probability of being from set B (A first, then B).
    """
    a, b = as_images(set_a, "set A"), as_images(set_b, "set B")
    label = f" ({name})" if name else ""
    if a.shape[1:] != b.shape[1:]:
        raise BrainVQError(f"the two sets{label} hold images of different sizes, {a.shape[1:3]} and "
                           f"{b.shape[1:3]}; resize them to one size first")
    groups_a, groups_b = np.asarray(groups_a).astype(str), np.asarray(groups_b).astype(str)
    if len(groups_a) != len(a) or len(groups_b) != len(b):
        raise BrainVQError(f"give one subject name per image{label}: {len(a)} and {len(b)} images, "
                           f"{len(groups_a)} and {len(groups_b)} names")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise BrainVQError(f"folds={folds!r}: a two-sample test needs an integer of at least 2 folds")
    folds = int(folds)
    for side, imgs, grp in (("A", a, groups_a), ("B", b, groups_b)):
        if len(imgs) < folds or len(set(grp)) < folds:
            raise BrainVQError(f"set {side}{label} has {len(imgs)} images of {len(set(grp))} subjects, fewer "
                               f"than the {folds} folds; give it more images or lower folds")
    if set(groups_a) & set(groups_b):   # the same subject on both sides: keep its images apart by set
        groups_a = np.asarray([f"A:{g}" for g in groups_a])
        groups_b = np.asarray([f"B:{g}" for g in groups_b])
    start = time.perf_counter()
    fa = texture_features(a) if features_a is None else np.asarray(features_a)
    fb = texture_features(b) if features_b is None else np.asarray(features_b)
    x = np.concatenate([fa, fb])
    y = np.concatenate([np.zeros(len(fa)), np.ones(len(fb))])
    groups = np.concatenate([groups_a, groups_b])
    scores = np.zeros(len(x), np.float64)
    for train, held in _folds(y, groups, folds, seed):
        scores[held] = make_classifier(seed).fit(x[train], y[train]).predict_proba(x[held])[:, 1]
    auc_value = auc(y, scores)
    auc_low, auc_high = grouped_bootstrap(y, scores, groups, auc, seed=seed)
    acc_low, acc_high = grouped_bootstrap(y, scores, groups, accuracy, seed=seed)
    return {"auc": auc_value, "auc_low": auc_low, "auc_high": auc_high,
            "accuracy": accuracy(y, scores), "accuracy_low": acc_low, "accuracy_high": acc_high,
            "n_a": int(len(fa)), "n_b": int(len(fb)), "folds": folds,
            "seconds": time.perf_counter() - start, "scores": scores}


# ----------------------------------------------------------------------------- precision and recall
def _kth_neighbour_radii(feats: np.ndarray, k: int) -> np.ndarray:
    d = _distances(feats, feats)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


def _distances(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None]
    return np.sqrt(np.maximum(sq, 0.0))


def coverage(reference, queries, k: int = 3) -> float:
    """Share of ``queries`` inside the k-NN manifold of ``reference``: within the distance
    from some reference point to its own k-th nearest reference neighbour."""
    reference, queries = np.asarray(reference), np.asarray(queries)
    if len(reference) <= k:
        raise BrainVQError(f"the k-NN manifold needs more than k={k} reference points; got {len(reference)}")
    radii = _kth_neighbour_radii(reference, k)
    return float((_distances(queries, reference) <= radii[None]).any(axis=1).mean())


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """Kynkaanniemi et al. 2019: precision = share of generated points inside the real
    manifold (are samples realistic?), recall = share of real points inside the generated
    manifold (is the variety of real slices covered?)."""
    return coverage(real_features, fake_features, k), coverage(fake_features, real_features, k)


class FeatureSpace:
    """The space of precision and recall: ``texture_features`` standardised and projected
    onto their first ``dims`` principal components, both fitted on **real** slices only."""

    def __init__(self, real_images, dims: int = 32, seed: int = 0, features=None):
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler
        f = texture_features(real_images) if features is None else np.asarray(features)
        if len(f) <= dims:
            raise BrainVQError(f"the feature space needs more than {dims} real slices to fit; got {len(f)}")
        self.scaler = StandardScaler().fit(f)
        self.pca = PCA(n_components=dims, random_state=seed).fit(self.scaler.transform(f))

    def __call__(self, images=None, features=None) -> np.ndarray:
        f = texture_features(images) if features is None else np.asarray(features)
        return self.pca.transform(self.scaler.transform(f))


# ----------------------------------------------------------------------------- per-position fidelity
def per_position_fidelity(queries, query_positions, references, reference_positions) -> np.ndarray:
    """Each query's highest SSIM inside the brain masks (``metrics.ssim_matrix(masked=True)``)
    against the references at its own slice position; NaN where there are none. ``references``:
    an (N, H, W, 1) array, or ``data.LazyImages`` (one position's images are read at a time)."""
    from . import metrics

    queries = as_images(queries, "queries")
    if not hasattr(references, "chunks"):   # data.LazyImages: read one position's references at a time
        references = as_images(references, "references")
    qp, rp = np.asarray(query_positions), np.asarray(reference_positions)
    if len(qp) != len(queries) or len(rp) != len(references):
        raise BrainVQError("give one slice position per image")
    out = np.full(len(queries), np.nan, np.float32)
    for p in np.unique(qp):
        q_idx, r_idx = np.flatnonzero(qp == p), np.flatnonzero(rp == p)
        if len(r_idx):
            out[q_idx] = metrics.nearest_neighbour_ssim(queries[q_idx], references[r_idx], masked=True)["masked"][0]
    return out


# ----------------------------------------------------------------------------- the whole report
# name: (set A, set B, what it measures); sets are named as in ``realism_scores``.
COMPARISONS = {
    "control": ("real", "real_other", "real vs real slices of other subjects: the control, about 0.5"),
    "real_vs_reconstructions": ("real", "reconstructions", "real vs VQ-VAE reconstructions: the decoder alone"),
    "reconstructions_vs_samples": ("reconstructions", "samples", "reconstructions vs samples: the prior alone"),
    "real_vs_samples": ("real", "samples", "real vs samples: the whole generator"),
    "random": ("reconstructions", "random", "reconstructions vs decoded random codes: the floor, about 1.0"),
}


def realism_scores(sets: dict, comparisons=tuple(COMPARISONS), folds: int = FOLDS, seed: int = 0,
                   log=print) -> tuple[dict, dict]:
    """Every two-sample comparison of ``COMPARISONS`` between the named ``sets``.

    ``sets`` maps ``real`` (held-out real slices), ``real_other`` (real slices of other
    held-out subjects), ``reconstructions`` (the VQ-VAE's reconstructions of ``real_other``),
    ``samples`` (generated at the positions of ``reconstructions``) and ``random`` (decoded
    uniform random codes) to ``(images, subject names)``. Returns the metrics.json keys
    (``realism_auc_<name>``, its ``_low``/``_high`` interval, ``realism_accuracy_<name>``) and
    the full result of each test (held-out scores included), plus ``features``: each set's
    ``texture_features``, computed once.
    """
    for name in comparisons:
        if name not in COMPARISONS:
            raise BrainVQError(f"realism comparison {name!r} is not known; use some of {list(COMPARISONS)}")
        for key in COMPARISONS[name][:2]:
            if key not in sets:
                raise BrainVQError(f"realism comparison {name!r} needs the set {key!r}; give it in `sets`")
    sizes = {key: tuple(np.shape(images)[1:3]) for key, (images, _) in sets.items()}
    if len(set(sizes.values())) > 1:
        raise BrainVQError(f"the realism sets hold images of different sizes {sizes}; resize them to one size")
    used = {key for name in comparisons for key in COMPARISONS[name][:2]}
    progress.report(f"realism: texture features of {len(used)} sets")
    feats = {key: texture_features(sets[key][0]) for key in used}
    section, details = {}, {"features": feats}
    for i, name in enumerate(comparisons, 1):
        a_name, b_name, what = COMPARISONS[name]
        progress.report(f"realism test {i}/{len(comparisons)}: {what.split(':')[0]}")
        (a, ga), (b, gb) = sets[a_name], sets[b_name]
        result = two_sample_test(a, b, ga, gb, folds=folds, seed=seed, name=name,
                                 features_a=feats[a_name], features_b=feats[b_name])
        details[name] = result
        section.update({f"realism_auc_{name}": result["auc"], f"realism_auc_{name}_low": result["auc_low"],
                        f"realism_auc_{name}_high": result["auc_high"],
                        f"realism_accuracy_{name}": result["accuracy"]})
        log(f"{what:<66} AUC {result['auc']:.3f} [{result['auc_low']:.3f}, {result['auc_high']:.3f}]")
    section["realism_folds"] = int(folds)
    return section, details


def precision_recall_scores(space: FeatureSpace, reference_features, candidates: dict, k: int = 3) -> dict:
    """Precision and recall of each named set of ``candidates`` (name: texture features)
    against the real ``reference_features``, in ``space``: ``{name: (precision, recall)}``."""
    ref = space(features=reference_features)
    return {name: precision_recall(ref, space(features=f), k) for name, f in candidates.items()}
