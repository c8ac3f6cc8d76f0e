"""The notebooks' "Try this" exercises: each a change of ``overrides`` with the effect to expect and why.

Each exercise names the notebook it belongs to and the step its override changes (``data``: opening
the data set and its batches, ``vqvae``: training the VQ-VAE, ``prior``: training the prior,
``sampling``: drawing code maps), so that tests/test_exercises.py can run every override through
that step on the smoke profile and none of them rots. ``show(notebook)`` prints them in a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Exercise:
    notebook: str
    step: str                   # data | vqvae | prior | sampling
    overrides: dict = field(default_factory=dict)
    expect: str = ""
    rerun: str = ""             # which notebooks to run again to see it


EXERCISES = (
    # 01: the data
    Exercise("01", "data", {"image_size": 64},
             "Every slice is resized to 64x64: a quarter of the pixels, so each epoch is about four times faster "
             "(02 and 04 stop at their time budgets, so they fit about four times as many epochs), and the code "
             "maps shrink to 16x16. Fine folds of the cortex blur away in the "
             "grids above.", "01, then 02-05 to see the cost in SSIM"),
    Exercise("01", "data", {"subjects": 60},
             "A smaller synthetic cohort (60 people instead of 100; fewer than 50 leave 05's realism test fewer "
             "held-out people than folds): fewer training slices, so the VQ-VAE and "
             "the prior see less variety and more of the same slices per second; in 05 watch the samples' "
             "nearest-neighbour SSIM and the memorised share, which tend to rise.", "01-05"),
    Exercise("01", "data", {"seed": 1},
             "Another cohort from another seed: other people, other splits. The numbers of 02-05 move a "
             "little: that is how much they vary from cohort to cohort.", "01-05"),
    # 02: the VQ-VAE
    Exercise("02", "vqvae", {"update": "gradient", "restart_below": 0.0},
             "The codebook learns by its gradient (the codebook term of the loss) and dead codes are never "
             "restarted: watch the codebook usage curve collapse to a small share of the codes, and the "
             "test SSIM fall.", "02 (with retrain=True) and 03"),
    Exercise("02", "vqvae", {"num_codes": 16},
             "Sixteen codes instead of 128: each code must stand for much more, so reconstructions lose "
             "detail (lower SSIM) but the prior's job in 04 gets easier (fewer bits per code).", "02-05"),
    Exercise("02", "vqvae", {"ssim_weight": 0.0},
             "Plain squared error, no SSIM term: the loss curve loses its SSIM part, and reconstructions get "
             "slightly blurrier (a small drop in test SSIM).", "02"),
    Exercise("02", "vqvae", {"downsample": 8},
             "Each code stands for an 8x8 patch instead of 4x4: a 16x16 code map, four times shorter for the "
             "prior, at a clear cost in SSIM.", "02-05"),
    # 03: the codebook
    Exercise("03", "vqvae", {"restart_below": 0.0},
             "No dead-code restarts (and no start from the data): some codes are never chosen; the usage "
             "figure shows dead codes and the perplexity drops.", "02 (retrain=True), then 03"),
    Exercise("03", "vqvae", {"num_codes": 512},
             "Four times as many codes: usage spreads thinner (more codes with few uses, maybe some dead) "
             "and the perplexity rises; the coloured code maps get finer shades.", "02, then 03"),
    Exercise("03", "vqvae", {"code_dim": 2},
             "Two-dimensional codes: the PCA figure then shows the codebook as it is (centred and turned), and "
             "the reconstructions suffer (each code carries two numbers only).", "02, then 03"),
    # 04: the prior
    Exercise("04", "prior", {"prior_arch": "pixelcnn"},
             "The plain masked PixelCNN, with its blind spot and no conditioning at all: more bits per code; "
             "05 cannot ask it for a slice level (its conditioning figure is skipped), and its samples come from "
             "every level at random, so 05's outline score and per-level fidelity judge them against levels they "
             "were not asked for.", "04 (retrain=True), then 05"),
    Exercise("04", "prior", {"prior_arch": "gated"},
             "The one-stage gated prior, without a layout drawn first: about as many bits per code, but it must "
             "decide where the brain ends while drawing the top rows; expect more broken outlines in 05.",
             "04 (retrain=True), then 05"),
    Exercise("04", "prior", {"prior_arch": "gated", "prior_location": False},
             "The one-stage gated prior without grid-location conditioning: only the slice level and the frame "
             "codes still tell it where on the grid it draws; expect more broken outlines in 05 than with the "
             "location bias (the default two-level prior keeps its outline through the layout, whatever this "
             "flag says).", "04 (retrain=True), then 05"),
    Exercise("04", "prior", {"condition_on_position": False},
             "No slice-level conditioning: one prior for every level, so samples can no longer be asked for "
             "a given level; the bits per code rise, and 05's outline score judges samples against levels they "
             "were not asked for.", "04, then 05"),
    Exercise("04", "prior", {"prior_arch": "maskgit"},
             "The masked-token transformer: it sees the whole map at once, but on a CPU it learns more slowly "
             "per second, so within the same budget expect a higher realism AUC in 05 (its bits per code are "
             "counted differently and are not comparable).", "04, then 05"),
    # 05: sampling
    Exercise("05", "sampling", {"temperature": 0.5},
             "Colder sampling: smoother, brighter, more typical slices and less variety (pairwise SSIM rises); "
             "with the one-stage gated prior the background code, the most likely of all, also cuts slices short; "
             "the default two-level prior forbids it inside the layout it drew, so only a cold layout can.", "05"),
    Exercise("05", "sampling", {"temperature": 1.2},
             "Hotter sampling: more detail and more variety (pairwise SSIM falls), then speckled noise inside the "
             "brain; watch the realism AUC and the outline score.", "05"),
    Exercise("05", "sampling", {"top_k": 8},
             "Only the 8 most likely codes at each position: fewer rare mistakes, less variety.", "05"),
    Exercise("05", "sampling", {"sampler": "reference"},
             "The reference sampler, the whole prior at every position: the same code maps from the same random "
             "draws (up to float round-off in the logits), with 1,024 full passes of the prior per batch instead "
             "of 32 row passes: many times slower.", "05"),
)


def for_notebook(notebook: str) -> list[Exercise]:
    return [e for e in EXERCISES if e.notebook == notebook]


def markdown(notebook: str) -> str:
    """The exercises of a notebook as a numbered Markdown list."""
    lines = ["Set `overrides` in the parameters cell and run the notebooks named in brackets. A model already "
             "saved in the run directory is loaded as it is, so where 02 or 04 must train again, set "
             "`retrain = True` there (or use a new `run_dir`; from a terminal: `brainvq run -p key=value`).", ""]
    for i, e in enumerate(for_notebook(notebook), 1):
        lines.append(f"{i}. `overrides = {e.overrides!r}` (run {e.rerun}): {e.expect}")
    return "\n".join(lines)


def show(notebook: str) -> None:
    """Display the exercises of a notebook ("01" ... "05")."""
    from .progress import in_notebook
    text = markdown(notebook)
    if in_notebook():
        from IPython.display import Markdown, display
        display(Markdown(text))
    else:
        print(text)
