"""The whole method in one picture, drawn from real images of a run so that it stays true:
slice -> encoder -> nearest codes -> code map -> prior -> new code map -> decoder -> new slice."""

from __future__ import annotations

import numpy as np

STEPS = ("slice", "code map", "new code map", "new slice")


def code_map_picture(codes, code_levels) -> np.ndarray:
    """A code map (h, w) as an image: each code shown as the mean grey level it decodes to
    (``codebook.code_levels``), so that the map reads as a small, blocky slice."""
    return np.asarray(code_levels)[np.asarray(codes)]


def method_figure(images: dict | None = None, grid=(32, 32), num_codes: int = 128, size: float = 1.9):
    """The method: real pictures where ``images`` has them (keys of ``STEPS``: (H, W) or (H, W, 1)
    images in [0, 1], code maps as pictures), placeholders elsewhere; the arrows name what happens."""
    import matplotlib.pyplot as plt

    images = images or {}
    fig = plt.figure(figsize=(size * 6.4, size * 1.75))
    xs = [0.02, 0.30, 0.58, 0.86]
    w, h, y = 0.12, 0.62, 0.22
    captions = {"slice": "a slice x\n(H x W grey pixels)",
                "code map": f"its code map\n({grid[0]} x {grid[1]} integers < {num_codes})",
                "new code map": "a new code map,\ndrawn code by code",
                "new slice": "a new slice\n(never seen)"}
    arrows = ["encoder: convolutions\n-> a vector per 4x4 patch\n-> nearest of K codes",
              "prior (PixelCNNs): a layout,\nthen p(code | codes before it)\nlearned, then sampled",
              "decoder: codes -> vectors\n-> transposed convolutions\n-> pixels"]
    for i, (x, step) in enumerate(zip(xs, STEPS)):
        ax = fig.add_axes((x, y, w, h))
        picture = images.get(step)
        if picture is not None:
            picture = np.asarray(picture, np.float32)
            ax.imshow(picture[..., 0] if picture.ndim == 3 else picture, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
        else:   # a square placeholder: a later notebook draws it
            ax.imshow(np.full((8, 8), 0.93), cmap="gray", vmin=0, vmax=1)
            ax.text(3.5, 3.5, "?", ha="center", va="center", fontsize=28, color="0.6")
        ax.set(xticks=[], yticks=[])
        ax.set_title(captions[step], fontsize=8)
        if i < len(arrows):
            fig.text((x + w + xs[i + 1]) / 2, y + h / 2 + 0.16, arrows[i], ha="center", va="center", fontsize=7.5)
            fig.patches.append(plt.matplotlib.patches.FancyArrowPatch(
                (x + w + 0.01, y + h / 2), (xs[i + 1] - 0.01, y + h / 2), transform=fig.transFigure,
                arrowstyle="-|>", mutation_scale=14, color="C0", lw=1.5))
    fig.text(0.5, 0.03, "training: the VQ-VAE learns encoder, codes and decoder (02); the prior learns the code maps "
             "of real slices (04). Generation: the prior draws a new map, the decoder paints it (05).",
             ha="center", fontsize=7.5, color="0.3")
    return fig
