""""What we found": each notebook's closing summary, written from the run's own ``metrics.json``.

Every number comes from the run (never typed in), beside the reference run whose figures the README
shows (``figures/reference_metrics.json``, written by ``brainvq bench reference`` from a demo run) and
the target of the demo profile, with what it means in plain words: met, missed, and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .paths import PROJ_ROOT

REFERENCE = PROJ_ROOT / "figures" / "reference_metrics.json"


@dataclass(frozen=True)
class Target:
    key: str                    # "section.key" in metrics.json
    label: str
    goal: object                # how the target reads ("at least 0.96"), or (metrics) -> that text
    met: object                 # (metrics) -> bool
    good: str                   # what it means when met
    bad: str                    # ... and when missed


def value(metrics: dict, key: str):
    section, _, name = key.partition(".")
    return (metrics.get(section) or {}).get(name)


def _v(m, key, default=float("nan")):
    x = value(m, key)
    return default if x is None else x


TARGETS = {
    "02": [
        Target("vqvae.test_ssim_mean", "test SSIM, mean", "at least 0.96", lambda m: _v(m, "vqvae.test_ssim_mean") >= 0.96,
               "reconstructions keep almost all of the structure of unseen slices",
               "the VQ-VAE has not learned enough in its budget: reconstructions are blurred (more training time, "
               "or more codes)"),
        Target("vqvae.test_ssim_p05", "test SSIM, 5th percentile", "at least 0.93",
               lambda m: _v(m, "vqvae.test_ssim_p05") >= 0.93,
               "even the worst slices are reconstructed well (the 'worst' column of the reconstructions shows which)",
               "the worst slices are reconstructed poorly: look at the 'worst' column of the reconstructions"),
        Target("vqvae.codebook_used_fraction", "codebook used", "at least 90% of the codes",
               lambda m: _v(m, "vqvae.codebook_used_fraction") >= 0.9,
               "the EMA updates and the dead-code restarts keep almost every code alive (alive is not evenly used: "
               "03's perplexity says how many codes are in effective use)",
               "many codes are dead: the restarts did not bring them back (is restart_below 0?)"),
    ],
    "03": [
        Target("codebook.test_used_fraction", "codes used by the test slices", "at least 90%",
               lambda m: _v(m, "codebook.test_used_fraction") >= 0.9,
               "almost every code is used on unseen slices, though unevenly: the perplexity, the effective number "
               "of codes in use, says how unevenly",
               "a large share of the codebook is never used on unseen slices"),
        Target("codebook.test_perplexity", "perplexity on the test slices", "(no target)", None,
               "the effective number of codes in use: well below the codebook's size, because the background "
               "code alone takes a large share of the positions", ""),
        Target("codebook.background_share", "positions taken by the background code", "(no target)", None,
               "most of the black background is one code (the grid's frame has codes of its own); the prior "
               "learns it almost for free", ""),
    ],
    "04": [
        Target("prior.test_bits_per_code", "bits per code, test",
               "below the code frequencies' entropy (a model blind to neighbours)",
               lambda m: _v(m, "prior.test_bits_per_code") < _v(m, "prior.unigram_bits_per_code", _v(
                   m, "prior.uniform_bits_per_code")),
               "the prior has learned how codes follow each other: it needs fewer bits than a model that knows only "
               "how often each code occurs",
               "the prior knows no more than how often each code occurs: it has hardly trained"),
    ],
    "05": [
        Target("generation.realism_auc_reconstructions_vs_samples", "AUC, reconstructions vs samples (the prior)",
               "at most 0.80", lambda m: _v(m, "generation.realism_auc_reconstructions_vs_samples") <= 0.80,
               "a classifier can hardly tell the prior's samples from reconstructions of real slices",
               "a classifier still tells samples from reconstructions: the prior is the gap (the least-real "
               "samples and the broken outlines show where: their outline, and their texture)"),
        Target("generation.realism_auc_control", "AUC, control (real vs real)", "between 0.40 and 0.60",
               lambda m: 0.40 <= _v(m, "generation.realism_auc_control") <= 0.60,
               "the test itself is fair: real slices of other people are not told apart (with about ten people a "
               "side its bootstrap interval is wide, so it rules out gross differences only)",
               "the control is off: the held-out sets differ by more than chance (too few subjects?)"),
        Target("generation.realism_auc_random", "AUC, floor (random codes)", "above 0.95",
               lambda m: _v(m, "generation.realism_auc_random") > 0.95,
               "the test can fail: decoded random codes are told apart at once",
               "the floor is not caught: the test is too weak to trust"),
        Target("generation.precision", "precision (of the control's)",
               lambda m: f"at least 0.95 x the control's {_v(m, 'generation.control_precision'):.3f} = "
                         f"{0.95 * _v(m, 'generation.control_precision'):.3f}",
               lambda m: _v(m, "generation.precision") >= 0.95 * _v(m, "generation.control_precision"),
               "samples lie where reconstructions of real slices lie", "too many samples lie off the real manifold"),
        Target("generation.recall", "recall (of the control's)",
               lambda m: f"at least 0.85 x the control's {_v(m, 'generation.control_recall'):.3f} = "
                         f"{0.85 * _v(m, 'generation.control_recall'):.3f}",
               lambda m: _v(m, "generation.recall") >= 0.85 * _v(m, "generation.control_recall"),
               "the samples cover the variety of real slices", "the samples miss part of the variety of real slices"),
        Target("generation.nn_ssim_masked_mean", "nearest-neighbour SSIM inside the masks",
               lambda m: f"at least 0.9 x the real slices' {_v(m, 'generation.real_nn_ssim_masked_mean'):.3f} = "
                         f"{0.9 * _v(m, 'generation.real_nn_ssim_masked_mean'):.3f}",
               lambda m: _v(m, "generation.nn_ssim_masked_mean") >= 0.9 * _v(m, "generation.real_nn_ssim_masked_mean"),
               "inside the brain, samples are as close to some training slice as unseen real slices are",
               "inside the brain, samples are further from any training slice than real slices are"),
        Target("generation.memorised_fraction", "memorised", "at most 5%",
               lambda m: _v(m, "generation.memorised_fraction") <= 0.05,
               "the prior makes new slices rather than copies", "too many samples copy a training slice"),
        Target("generation.realism_auc_real_vs_reconstructions", "AUC, real vs reconstructions (the decoder)",
               "(reported, no target)", None,
               "how well a classifier tells real slices from their VQ-VAE reconstructions: the decoder's own gap "
               "(it smooths away the scanner-like fine texture); real vs samples cannot score much below it", ""),
        Target("generation.precision_vs_real", "precision against real slices", "(reported, no target)",
               None, "precision with real slices instead of reconstructions as the reference: the whole generator, "
               "decoder included; low where the decoder's smoothing alone sets samples apart", ""),
        Target("generation.recall_vs_real", "recall against real slices", "(reported, no target)", None,
               "the same for recall", ""),
        Target("generation.outline_broken_fraction", "broken outlines",
               lambda m: f"at most 0.06 and the real slices' {_v(m, 'generation.real_outline_broken_fraction'):.3f} "
                         f"+ 0.03",
               lambda m: _v(m, "generation.outline_broken_fraction", 1.0) <= min(
                   0.06, _v(m, "generation.real_outline_broken_fraction", 0.0) + 0.03),
               "the samples' brains have the extent, position and shape of real slices of their level",
               "some samples' brains leave the extent, position or shape that real slices of their level span (the "
               "figure of broken samples says which number left the band: a misplaced brain, a wrong size, or "
               "pieces)"),
    ],
}


def reference(path=REFERENCE) -> dict:
    """The reference run's metrics (``{}`` if the file is missing)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def summary(metrics: dict, notebook: str, profile: str, ref: dict | None = None) -> str:
    """Markdown: a table (measure, this run, reference run, target, met) and a sentence per measure."""
    ref = reference() if ref is None else ref
    rows = ["| measure | this run | reference run | target | |", "|---|---|---|---|---|"]
    words = []
    for t in TARGETS[notebook]:
        mine, theirs = value(metrics, t.key), value(ref, t.key)
        goal = t.goal(metrics) if callable(t.goal) else t.goal
        if mine is None:
            rows.append(f"| {t.label} | not measured | {_fmt(theirs)} | {goal} | |")
            continue
        ok = None if t.met is None else bool(t.met(metrics))
        mark = "" if ok is None else ("met" if ok else "missed")
        rows.append(f"| {t.label} | {_fmt(mine)} | {_fmt(theirs)} | {goal} | {mark} |")
        words.append(f"- **{t.label}** {_fmt(mine)}: " + (t.good if ok or ok is None else t.bad) + ".")
    note = ""
    if profile != "demo":
        note = (f"\n\nThis run used the **{profile}** profile; the targets are set for the demo profile "
                f"(the smoke profile trains for seconds and only checks that every step runs).")
    where = ref.get("reference", {}).get("what", "the README's reference run") if ref else "no reference run found"
    return "\n".join(rows) + "\n\n" + "\n".join(words) + note + f"\n\nReference run: {where}."


def show(metrics: dict, notebook: str, profile: str) -> str:
    text = summary(metrics, notebook, profile)
    from .progress import in_notebook
    if in_notebook():
        from IPython.display import Markdown, display
        display(Markdown(text))
    else:
        print(text)
    return text
