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
from pathlib import Path

from brainvq_utils.findings import REFERENCE
from brainvq_utils.paths import PROJ_ROOT
from brainvq_utils.runs import read_metrics, run_path

HEADLINE = ("vqvae.test_ssim_mean", "vqvae.test_ssim_p05", "vqvae.codebook_used_fraction", "prior.test_bits_per_code",
            "generation.realism_auc_reconstructions_vs_samples", "generation.realism_auc_control",
            "generation.realism_auc_random", "generation.precision", "generation.recall",
            "generation.outline_broken_fraction", "timing.total")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="brainvq bench reference")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--what", default=None, help="how the run was made, shown beside its numbers")
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
    print(json.dumps({"bench": "reference", "run": run.name, "commit": commit, **flat}))


if __name__ == "__main__":
    main()
