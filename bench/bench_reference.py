"""Make a finished run the README's reference run: copy its figures into figures/ and its metrics into
figures/reference_metrics.json, with what it was (command, commit, machine), which notebooks 02-05 show
beside their own numbers ("What we found", brainvq_utils.findings).

    brainvq bench reference --run-dir runs/demo-a [--what "brainvq run --run-dir demo-a, clean clone of 1a2b3c4"]

Prints a table of the headline numbers and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess

from brainvq_utils.findings import REFERENCE
from brainvq_utils.paths import PROJ_ROOT
from brainvq_utils.runs import read_metrics, run_path

ROWS = [  # (label, key, format, target) of the README's results table
    ("VQ-VAE test SSIM, mean / 5th percentile", ("vqvae.test_ssim_mean", "vqvae.test_ssim_p05"), "{:.3f} / {:.3f}",
     ">= 0.96 / >= 0.93"),
    ("codebook used / perplexity", ("vqvae.codebook_used_fraction", "vqvae.perplexity"), "{:.0%} / {:.0f}", ">= 90%"),
    ("prior: bits per code (uniform: log2 K)", ("prior.test_bits_per_code", "prior.uniform_bits_per_code"),
     "{:.2f} ({:.0f})", ""),
    ("AUC, reconstructions vs samples (the prior alone)", ("generation.realism_auc_reconstructions_vs_samples",),
     "{:.3f}", "<= 0.80"),
    ("AUC, control (real vs real) / floor (random codes)", ("generation.realism_auc_control",
                                                             "generation.realism_auc_random"), "{:.3f} / {:.3f}",
     "0.40-0.60 / > 0.95"),
    ("broken outlines: samples / real test slices / random codes", ("generation.outline_broken_fraction",
                                                                    "generation.real_outline_broken_fraction",
                                                                    "generation.random_outline_broken_fraction"),
     "{:.1%} / {:.1%} / {:.1%}", "<= 6% and <= real + 3 points"),
    ("precision / recall (the control's)", ("generation.precision", "generation.recall", "generation.control_precision",
                                            "generation.control_recall"), "{:.2f} / {:.2f} ({:.2f} / {:.2f})",
     ">= 0.95x / >= 0.85x the control's"),
    ("NN-SSIM inside the masks: samples / real", ("generation.nn_ssim_masked_mean",
                                                  "generation.real_nn_ssim_masked_mean"), "{:.3f} / {:.3f}", ">= 0.9x real"),
    ("memorised / empty samples", ("generation.memorised_fraction", "generation.empty_fraction"), "{:.1%} / {:.1%}",
     "<= 5% / -"),
    ("seconds, notebooks 01-05 (total)", ("timing.01_data_exploration", "timing.02_vqvae_training",
                                          "timing.03_codebook_inspection", "timing.04_pixelcnn_training",
                                          "timing.05_generation_and_evaluation", "timing.total"),
     "{:.0f} + {:.0f} + {:.0f} + {:.0f} + {:.0f} = {:.0f}", "<= 780 (13 min)"),
]


def _get(metrics, key):
    section, _, name = key.partition(".")
    return (metrics.get(section) or {}).get(name)


def markdown_table(runs: dict) -> str:
    """The README's results table for one or more runs' metrics (name -> metrics)."""
    head = "| measure | " + " | ".join(runs) + " | target |"
    lines = [head, "|---" * (len(runs) + 2) + "|"]
    for label, keys, fmt, target in ROWS:
        cells = []
        for m in runs.values():
            values = [_get(m, k) for k in keys]
            cells.append("-" if any(v is None for v in values) else fmt.format(*values))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


HEADLINE = ("vqvae.test_ssim_mean", "vqvae.test_ssim_p05", "vqvae.codebook_used_fraction", "prior.test_bits_per_code",
            "generation.realism_auc_reconstructions_vs_samples", "generation.realism_auc_control",
            "generation.realism_auc_random", "generation.precision", "generation.recall",
            "generation.outline_broken_fraction", "timing.total")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="brainvq bench reference")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--what", default=None, help="how the run was made, shown beside its numbers")
    parser.add_argument("--also", nargs="*", default=[], help="more finished runs for the README's table (not copied)")
    args = parser.parse_args(argv)
    run = run_path(args.run_dir)
    metrics = read_metrics(run)
    if not metrics.get("timing", {}).get("05_generation_and_evaluation"):
        raise SystemExit(f"brainvq: error: {run} is not a finished run (no timing of notebook 05 in metrics.json)")
    commit = subprocess.run(["git", "-C", str(PROJ_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"
    what = args.what or f"brainvq run ({run.name}) at commit {commit} on {machine}"
    metrics["reference"] = {"what": what, "commit": commit, "machine": machine, "run": run.name}
    REFERENCE.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    copied = 0
    for png in sorted((run / "figures").glob("*.png")):
        shutil.copy2(png, PROJ_ROOT / "figures" / png.name)
        copied += 1
    print(f"reference run: {what}")
    print(f"{'measure':52}{'value':>10}")
    flat = {}
    for key in HEADLINE:
        section, _, name = key.partition(".")
        value = metrics.get(section, {}).get(name)
        flat[key] = value
        print(f"{key:52}{value if value is None else round(float(value), 3):>10}")
    print(f"copied {copied} figures to figures/; wrote {REFERENCE.relative_to(PROJ_ROOT)}")
    table = {run.name: metrics, **{run_path(r).name: read_metrics(run_path(r)) for r in args.also}}
    print("\n" + markdown_table(table) + "\n")
    print(json.dumps({"bench": "reference", "run": run.name, "commit": commit, **flat}))


if __name__ == "__main__":
    main()
