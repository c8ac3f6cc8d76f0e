"""What the notebooks teach with: the package's one copy of a mechanism shown under the prose that
explains it (``show_source``), and toys that run the mechanism on a few numbers in a second.

- ``vq_toy``: vector quantisation of a few 2-D points against a 3-code codebook: the nearest code,
  the straight-through output, and its Jacobian (the identity: ``straight_through_jacobian``).
- ``ema_toy``: the EMA codebook following three clusters of points, and a dead code restarted.
- ``dependency_map``: which input codes can change a prior's prediction at one position (its
  receptive field), found by changing each code in turn: the plain PixelCNN's blind spot.
- ``schedule_figure`` and friends draw what the prose describes.

Every toy calls the same functions and layers that the training runs; nothing here is a second copy.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import keras
import numpy as np

from .progress import in_notebook

PACKAGE_ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- showing the code
def source_of(obj) -> tuple[str, str]:
    """(where, code): the file and lines of a function, class or method of the package, and its source."""
    target = inspect.unwrap(obj)
    lines, start = inspect.getsourcelines(target)
    path = Path(inspect.getsourcefile(target)).resolve()
    try:
        where = str(path.relative_to(PACKAGE_ROOT.parent))
    except ValueError:
        where = path.name
    return f"{where}, lines {start}-{start + len(lines) - 1}", textwrap.dedent("".join(lines)).rstrip()


def show_source(obj) -> str:
    """Show the source of ``obj`` (as a highlighted code block in a notebook, as text elsewhere) and
    return it: the code that runs, read from the package, never a copy."""
    where, code = source_of(obj)
    if in_notebook():
        from IPython.display import Markdown, display
        display(Markdown(f"`{where}`\n\n```python\n{code}\n```"))
    else:
        print(f"# {where}\n{code}")
    return code


# ----------------------------------------------------------------------------- vector quantisation
TOY_POINTS = np.array([[0.1, 0.2], [0.9, 0.8], [0.4, 0.9], [-0.6, -0.1], [0.8, -0.5]], np.float32)
TOY_CODEBOOK = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, -1.0]], np.float32)


def toy_quantizer(codebook=TOY_CODEBOOK, **kwargs):
    """A ``VectorQuantizer`` of 2-D codes whose codebook is ``codebook`` (EMA state to match)."""
    from .vqvae import VectorQuantizer

    codebook = np.asarray(codebook, np.float32)
    q = VectorQuantizer(len(codebook), codebook.shape[1], name="toy_quantizer", **kwargs)
    q.build((None, 1, None, codebook.shape[1]))
    q.base.assign(codebook)
    counts = np.full(len(codebook), 5.0, np.float32)   # as if each code had won 5 vectors a batch
    q.ema_count.assign(counts)
    if q.update == "ema":
        q.ema_sum.assign(codebook * counts[:, None])
    return q


def straight_through_jacobian(quantizer, z) -> np.ndarray:
    """d z_q / d z_e of ``quantizer`` at the vectors ``z`` (N, D), as an (N*D, N*D) matrix, by the
    backend's automatic differentiation: the identity, since z_q = z_e + sg(e - z_e)."""
    z = np.asarray(z, np.float32)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        zt = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(zt)
            out = quantizer(zt[None, None])[0, 0]
        jac = tape.jacobian(out, zt).numpy()
    elif backend == "jax":
        import jax
        jac = np.asarray(jax.jacobian(lambda v: quantizer(v[None, None])[0, 0])(z))
    elif backend == "torch":
        import torch
        jac = torch.autograd.functional.jacobian(lambda v: quantizer(v[None, None])[0, 0],
                                                 torch.tensor(z)).numpy()
    else:
        raise NotImplementedError(f"no gradients on the {backend} backend")
    return jac.reshape(z.size, z.size)


def vq_toy(points=TOY_POINTS, codebook=TOY_CODEBOOK) -> dict:
    """Quantise ``points`` (N, 2) against ``codebook`` (K, 2) with the project's ``VectorQuantizer``:
    the distances, the nearest code of each point, the quantised output and the Jacobian."""
    q = toy_quantizer(codebook)
    z = np.asarray(points, np.float32)
    idx = keras.ops.convert_to_numpy(q.indices(z[None, None]))[0, 0]
    z_q = keras.ops.convert_to_numpy(q(z[None, None]))[0, 0]
    dist = ((z[:, None] - np.asarray(codebook)[None]) ** 2).sum(-1)
    return {"points": z, "codebook": np.asarray(codebook), "distances": dist, "nearest": idx, "quantized": z_q,
            "jacobian": straight_through_jacobian(q, z)}


def vq_toy_figure(toy: dict):
    """Points, codes, and an arrow from each point to the code it is replaced by."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.4, 4))
    pts, book = toy["points"], toy["codebook"]
    for i, (p, k) in enumerate(zip(pts, toy["nearest"])):
        ax.annotate("", xy=book[k], xytext=p, arrowprops=dict(arrowstyle="->", color=f"C{k}", lw=1.2))
        ax.text(p[0], p[1] + 0.06, f"z{i}", ha="center", fontsize=8)
    ax.scatter(pts[:, 0], pts[:, 1], c=[f"C{k}" for k in toy["nearest"]], s=30, label="encoder outputs z_e")
    ax.scatter(book[:, 0], book[:, 1], marker="*", s=260, c=[f"C{k}" for k in range(len(book))],
               edgecolors="k", label="codes e_k")
    for k, e in enumerate(book):
        ax.text(e[0] + 0.07, e[1] - 0.12, f"e{k}", fontsize=9)
    ax.set(title="each vector is replaced by its nearest code", aspect="equal")
    ax.legend(fontsize=8, loc="lower left")
    return fig


# ----------------------------------------------------------------------------- the EMA codebook
def ema_toy(steps: int = 40, batch: int = 30, decay: float = 0.9, seed: int = 0) -> dict:
    """Three clusters of 2-D points and a codebook of three codes, one of them far from every point
    (dead: it wins nothing). Each step quantises a batch with ``training=True``: the live codes move
    to the means of the vectors they win (exponential moving averages of counts and sums), and the
    dead code's count decays until it is restarted on a point of the batch. Returns the codebook
    after every step, the points, and the step at which each code was restarted (if it was)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-1.0, -1.0], [1.0, -0.5], [0.0, 1.2]], np.float32)
    start = np.array([[-0.5, -0.5], [0.5, 0.0], [4.0, 4.0]], np.float32)   # the third code is dead
    q = toy_quantizer(start, decay=decay, restart_below=1.0, seed=seed)
    history, counts, restarted = [start.copy()], [np.full(3, 5.0)], {}
    all_points = []
    for step in range(steps):
        pts = (centres[rng.integers(0, 3, batch)] + rng.normal(0, 0.25, (batch, 2))).astype(np.float32)
        all_points.append(pts)
        before = float(keras.ops.convert_to_numpy(q.restarts))
        q(pts[None, None], training=True)
        if float(keras.ops.convert_to_numpy(q.restarts)) > before:
            moved = np.flatnonzero(np.abs(keras.ops.convert_to_numpy(q.base) - history[-1]).sum(1) > 1.0)
            for k in moved:
                restarted.setdefault(int(k), step + 1)
        history.append(keras.ops.convert_to_numpy(q.base).copy())
        counts.append(keras.ops.convert_to_numpy(q.ema_count).copy())
    return {"codebook": np.stack(history), "counts": np.stack(counts), "points": np.concatenate(all_points),
            "restarted": restarted, "centres": centres}


def ema_toy_figure(toy: dict):
    """The codes' paths over the steps, and each code's moving-average count."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.scatter(*toy["points"].T, s=3, c="0.75", label="encoder outputs")
    for k in range(toy["codebook"].shape[1]):
        path = toy["codebook"][:, k]
        ax.plot(*path.T, "-o", ms=2, color=f"C{k}", label=f"code {k}" + (
            f" (restarted at step {toy['restarted'][k]})" if k in toy["restarted"] else ""))
        ax.scatter(*path[-1], marker="*", s=200, color=f"C{k}", edgecolors="k", zorder=3)
    ax.set(title="codes follow the vectors they win", aspect="equal")
    ax.legend(fontsize=7)
    ax = axes[1]
    for k in range(toy["counts"].shape[1]):
        ax.plot(toy["counts"][:, k], color=f"C{k}", label=f"code {k}")
    ax.axhline(1.0, color="k", ls=":", lw=1, label="restart below (restart_below)")
    ax.set(yscale="log", xlabel="step", ylabel="moving-average count (vectors won per batch)",
           title="a code that wins nothing fades, and is restarted")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- priors
def dependency_map(prior, position, seed: int = 0) -> np.ndarray:
    """(h, w) bool: which input codes can change the prior's logits at ``position`` (i, j), its
    receptive field. Each code of a random map is changed in turn (twice, to two other codes), all
    in one batch, and the logits at (i, j) compared with the unchanged map's. For a causal prior
    every True lies before (i, j) in raster order."""
    from .priors import prior_info

    info = prior_info(prior)
    (h, w), k = info["grid"], info["num_codes"]
    rng = np.random.default_rng(seed)
    base = rng.integers(0, k, (h, w)).astype(np.int32)
    changed = []
    for shift in (1, 2):
        for a in range(h):
            for b in range(w):
                m = base.copy()
                m[a, b] = (m[a, b] + shift) % k
                changed.append(m)
    codes = np.stack([base, *changed])
    inputs = {"codes": codes}
    if info["num_positions"]:
        inputs["position"] = np.zeros(len(codes), np.int32)
    if info["num_classes"]:
        inputs["label"] = np.zeros(len(codes), np.int32)
    logits = keras.ops.convert_to_numpy(prior(inputs))[:, position[0], position[1]]
    moved = np.abs(logits[1:] - logits[0]).max(axis=-1) > 1e-6
    return moved.reshape(2, h, w).any(axis=0)


def blind_spot(dep: np.ndarray, position) -> np.ndarray:
    """(h, w) bool: codes before ``position`` in raster order that the prediction does not see although
    it sees a code farther up the same column: the blind spot, a wedge that more layers do not fill.
    Other unseen codes are merely beyond the layers' reach, which more layers would fix."""
    h, w = dep.shape
    before = (np.arange(h)[:, None] * w + np.arange(w)[None]) < position[0] * w + position[1]
    seen_above = np.zeros_like(dep)
    seen_above[1:] = np.logical_or.accumulate(dep, axis=0)[:-1]
    return before & ~dep & seen_above


def dependency_figure(maps: dict, position):
    """Dependency maps side by side: the position predicted (red), the codes it sees (dark), the blind
    spot (orange: before it, within its reach, unseen) and what lies beyond its reach (light grey)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = ["white", "0.85", "orange", "0.25", "red"]
    fig, axes = plt.subplots(1, len(maps), figsize=(3.4 * len(maps), 3.9))
    axes = np.atleast_1d(axes)
    for ax, (name, dep) in zip(axes, maps.items()):
        h, w = dep.shape
        before = (np.arange(h)[:, None] * w + np.arange(w)[None]) < position[0] * w + position[1]
        spot = blind_spot(dep, position)
        picture = np.where(dep, 3, np.where(spot, 2, np.where(before, 1, 0)))
        picture[position] = 4
        ax.imshow(picture, cmap=ListedColormap(colours), vmin=0, vmax=4)
        ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
        ax.grid(which="minor", color="0.7", lw=0.5)
        ax.tick_params(which="both", length=0)
        ax.set(xticks=[], yticks=[])
        ax.set_title(f"{name}\nsees {int(dep.sum())} codes; blind spot {int(spot.sum())}", fontsize=9)
    fig.legend(handles=[Patch(facecolor=c, edgecolor="0.6", label=t) for c, t in zip(colours, (
        "after (never seen)", "before, beyond reach", "blind spot", "seen", "predicted"))],
        loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def level_maps(prior, positions) -> np.ndarray:
    """(P, h/4, w/4): how far each slice level's own location map departs from the average level's at each
    4x4 block of codes (the length of the difference of their vectors), without the grid-location part
    that all levels share; an empty array for a prior without level maps. The maps start as small random
    vectors, so after a short training this is mostly that random start."""
    level = getattr(prior, "level_location_embedding", None)
    if level is None:
        return np.zeros((0, 1, 1))
    every = keras.ops.convert_to_numpy(level).astype(np.float64)
    maps = every[np.asarray(positions, np.int32)] - every.mean(axis=0)
    return np.linalg.norm(maps, axis=-1)


def schedule_figure(total: int, steps: int):
    """MaskGIT's decoding schedule: how many codes are still masked after each step (``masked_counts``)."""
    import matplotlib.pyplot as plt

    from .priors import masked_counts

    counts = masked_counts(total, steps)
    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.step(np.arange(1, steps + 1), counts, where="post", marker="o", ms=3)
    revealed = np.diff([total, *counts]) * -1
    for t, (c, r) in enumerate(zip(counts, revealed), 1):
        ax.text(t, c + total * 0.02, f"+{r}", ha="center", fontsize=7)
    ax.set(xlabel="decoding step", ylabel="codes still masked", title=f"cosine schedule: {total} codes in {steps} steps")
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- the explorer (05)
def _explore_draw(prior, vqvae, real_split, image_size, sampling_kwargs, level, temperature, seed, n):
    """``n`` samples at ``level`` and ``temperature``, decoded, and up to ``n`` real slices of that level."""
    from . import sampling
    from .priors import prior_info

    info = prior_info(prior)
    cond = {}
    if info["num_positions"]:
        cond["position"] = np.full(n, int(level))
    if info["num_classes"]:
        cond["label"] = np.zeros(n, int)
    maps = sampling.sample(prior, n, seed=int(seed), **{**sampling_kwargs, "temperature": float(temperature)}, **cond)
    images = np.clip(keras.ops.convert_to_numpy(vqvae.decode(maps)), 0, 1)
    same = [i for i, z in enumerate(real_split.slices) if z == level][:n]
    real = real_split.subset(same).load(image_size) if same else np.zeros((0, *images.shape[1:]), np.float32)
    return images, real


def explorer(prior, vqvae, real_split, image_size, sampling_kwargs: dict, seed: int = 0, n: int = 4):
    """Draw slices live: in a notebook someone watches, sliders for the slice level, the temperature and
    the seed (ipywidgets); each change samples ``n`` code maps there, decodes them and shows them beside
    real slices of that level from ``real_split``. Headless (papermill, CI), one static grid for three
    levels instead (saved as ``05_explorer``)."""
    import matplotlib.pyplot as plt

    from . import plotting
    from .priors import prior_info
    from .progress import interactive

    info = prior_info(prior)
    top = max(info["num_positions"] - 1, 0)

    def picture(level, temperature, seed_):
        images, real = _explore_draw(prior, vqvae, real_split, image_size, sampling_kwargs, level, temperature,
                                     seed_, n)
        rows = {f"samples, level {level}, T = {temperature:.1f}": images}
        if len(real):
            rows[f"real, level {level}"] = real
        return plotting.rows_grid(rows, size=1.7)

    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        widgets = None
    if widgets is not None and interactive():
        level = widgets.IntSlider(value=top // 2, min=0, max=top, description="slice level", continuous_update=False,
                                  disabled=not info["num_positions"])
        temperature = widgets.FloatSlider(value=float(sampling_kwargs.get("temperature", 1.0)), min=0.3, max=1.6,
                                          step=0.1, description="temperature", continuous_update=False)
        seed_box = widgets.IntText(value=seed, description="seed")
        out = widgets.Output()

        def redraw(_=None):
            with out:
                out.clear_output(wait=True)
                fig = picture(level.value, temperature.value, seed_box.value)
                plt.show(fig)

        for w in (level, temperature, seed_box):
            w.observe(redraw, names="value")
        display(widgets.VBox([widgets.HBox([level, temperature, seed_box]), out]))
        redraw()
        return None
    levels = sorted({0 if not top else int(v) for v in np.linspace(1, max(top - 1, 1), 3)})
    rows = {}
    for z in levels:
        images, real = _explore_draw(prior, vqvae, real_split, image_size, sampling_kwargs, z,
                                     sampling_kwargs.get("temperature", 1.0), seed, n)
        rows[f"samples, level {z}"] = images
        if len(real):
            rows[f"real, level {z}"] = real
    fig = plotting.rows_grid(rows, size=1.5, suptitle="the explorer, headless: samples beside real slices of their level")
    plotting.save_figure("05_explorer", fig)
    return None
