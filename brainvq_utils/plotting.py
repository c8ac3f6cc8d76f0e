"""Figures: one helper saves them all, a few draw the brain grids the notebooks share.

Brains are drawn in grey with vmin=0, vmax=1 and no axes; titles carry the number that
matters. ``save_figure`` writes a PNG into the run's ``figures/`` folder and shows the
figure only under an inline (notebook) backend, so headless runs never block.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from .errors import BrainVQError
from .runs import atomic_path

_FIGURE_DIR: Path | None = None


def set_figure_dir(run_dir) -> Path:
    """Send every later ``save_figure`` to ``run_dir/figures``."""
    global _FIGURE_DIR
    _FIGURE_DIR = Path(run_dir) / "figures"
    _FIGURE_DIR.mkdir(parents=True, exist_ok=True)
    return _FIGURE_DIR


def save_figure(name: str, fig=None, folder=None, dpi: int = 110) -> Path:
    """Write ``fig`` (default: the current figure) as ``<folder>/<name>.png``."""
    folder = Path(folder) if folder is not None else _FIGURE_DIR
    if folder is None:
        raise BrainVQError("no figure folder set: call plotting.set_figure_dir(run_dir) first")
    fig = fig or plt.gcf()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(name).stem}.png"
    with atomic_path(path) as tmp:   # never half a PNG under the final name
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", facecolor="white")
    if "inline" in matplotlib.get_backend().lower():
        plt.show()
    else:
        plt.close(fig)
    return path


def _squeeze(img):
    img = np.asarray(img)
    return img[..., 0] if img.ndim == 3 else img


def brain_grid(images, titles=None, ncols: int = 8, size: float = 1.6, suptitle=None,
               cmap="gray", vmin=0.0, vmax=1.0):
    """A grid of images with optional per-image titles."""
    n = len(images)
    if n == 0:
        raise BrainVQError("nothing to draw: the image list is empty")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    row_height = size + (0.35 if titles is not None else 0.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, row_height * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_squeeze(images[i]), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def rows_grid(rows: dict, titles=None, size: float = 1.6, suptitle=None, cmaps=None):
    """Images in labelled rows, e.g. {"original": x, "reconstruction": y}; titles per row."""
    names = list(rows)
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), ncols, figsize=(size * ncols, size * len(names) + 0.3), squeeze=False)
    for r, name in enumerate(names):
        cmap = (cmaps or {}).get(name, "gray")
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([]); ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(rows[name]):
                img = _squeeze(rows[name][c])
                kw = dict(vmin=0, vmax=1) if cmap == "gray" else {}
                ax.imshow(img, cmap=cmap, interpolation="nearest", **kw)
                if titles and name in titles:
                    ax.set_title(titles[name][c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def history_figure(history: dict, panels: dict, suptitle=None):
    """Training curves: ``panels`` maps a panel title to the history keys drawn in it."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            if key in history and len(history[key]):
                ax.plot(np.arange(1, len(history[key]) + 1), history[key], marker="o", ms=3, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def blind_grid(samples, real, seed: int = 0, ncols: int = 8, size: float = 1.4, suptitle=None):
    """Samples and real slices shuffled together into numbered panels, with the key (which
    numbers are samples) printed beside the grid: cover the key and guess. Returns the
    figure and the key (True where a panel is a sample)."""
    samples, real = np.asarray(samples), np.asarray(real)
    if not len(samples) or not len(real):
        raise BrainVQError("the blind grid needs samples and real slices")
    images = np.concatenate([samples, real])
    is_sample = np.r_[np.ones(len(samples), bool), np.zeros(len(real), bool)]
    order = np.random.default_rng(seed).permutation(len(images))
    images, is_sample = images[order], is_sample[order]
    fig = brain_grid(images, titles=[str(i + 1) for i in range(len(images))], ncols=ncols, size=size,
                     suptitle=suptitle)
    numbers = [str(i + 1) for i in np.flatnonzero(is_sample)]
    lines = ["key: samples are"] + [", ".join(numbers[i:i + 6]) for i in range(0, len(numbers), 6)]
    width = fig.get_size_inches()[0]
    fig.set_size_inches(width + 1.9, fig.get_size_inches()[1])
    fig.subplots_adjust(right=width / (width + 1.9))
    fig.text(width / (width + 1.9) + 0.01, 0.5, "\n".join(lines), fontsize=8, va="center", family="monospace")
    return fig, is_sample
