"""Benchmark: test bits per code of the gated prior against the baseline, same training time.

    brainvq bench prior --run-dir RUN [--budget 180] [--variants pixelcnn gated ...] [--precisions ...]

Needs a run whose notebook 04 wrote ``codes.npz`` (the VQ-VAE's code maps of every
split). Each variant trains from scratch on the train codes for ``--budget`` seconds
(validation time included) with the profile's prior settings, then is scored on the
test codes: bits per code (cross-entropy in bits), accuracy. Variants: the masked
baseline (keras.io-sized: 128 channels, 2 residual blocks) and the gated prior, neither
conditioned (the like-for-like pair), then the gated prior with the grid-location
embedding, and with location and slice position (the default). ``--precisions float32
mixed_bfloat16`` trains each variant in both arithmetics (default: the profile's
``prior_precision``). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from brainvq_utils import training  # noqa: E402
from brainvq_utils.config import PRECISIONS, PriorConfig, load_params, stage_config  # noqa: E402

VARIANTS = {   # the first two are the like-for-like comparison: neither is conditioned
    "pixelcnn": dict(prior_arch="pixelcnn", prior_channels=128, prior_layers=2, condition_on_position=False,
                     prior_location=False),
    "gated": dict(prior_arch="gated", condition_on_position=False, prior_location=False),
    "gated+location": dict(prior_arch="gated", condition_on_position=False, prior_location=True),
    "gated+location+position": dict(prior_arch="gated", condition_on_position=True, prior_location=True),
}


def bench_one(name, precision, codes, args):
    overrides = {**VARIANTS[name], "prior_time_budget_s": args.budget, "prior_epochs": 10_000}
    if precision is not None:
        overrides["prior_precision"] = precision
    cfg = stage_config(PriorConfig, load_params(args.profile, overrides))
    k = int(codes["train_codes"].max()) + 1 if args.num_codes is None else args.num_codes
    grid = codes["train_codes"].shape[1:]
    positions = int(codes["num_positions"]) if cfg.condition_on_position else 0

    def inputs(split):
        return training.prior_inputs(codes[f"{split}_codes"], codes[f"{split}_position"] if positions else None)

    build = training.prior_builder(cfg, k, grid, positions)
    with tempfile.TemporaryDirectory() as tmp:
        keras.utils.set_random_seed(cfg.prior_seed)
        prior, history = training.train_prior(
            training.code_dataset(inputs("train"), cfg.prior_batch_size, shuffle=True, seed=cfg.prior_seed),
            training.code_dataset(inputs("validate"), cfg.prior_batch_size), cfg, build, tmp, verbose=0)
        scores = training.prior_scores(prior, training.code_dataset(inputs("test"), cfg.prior_batch_size))
    return {"variant": name, **{k_: v for k_, v in dataclasses.asdict(cfg).items()
                                if k_ in ("prior_arch", "prior_channels", "prior_layers")},
            "precision": build.precision,
            "parameters": int(prior.count_params()), "epochs": len(history["loss"]),
            "train_seconds": round(history["train_seconds"][-1], 1),
            "test_bits_per_code": round(scores["bits_per_code"], 4), "test_accuracy": round(scores["accuracy"], 4),
            "uniform_bits": round(float(np.log2(k)), 3)}


def main():
    parser = argparse.ArgumentParser(prog="brainvq bench prior", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="a run directory with codes.npz (notebook 04 ran)")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per variant")
    parser.add_argument("--num-codes", type=int, default=None, help="codebook size (default: from the run's vqvae)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--precisions", nargs="+", default=[None], choices=list(PRECISIONS),
                        help="train each variant in each of these (default: the profile's prior_precision)")
    args = parser.parse_args()
    run = Path(args.run_dir)
    if args.num_codes is None:
        args.num_codes = json.loads((run / "metrics.json").read_text())["vqvae"]["codebook_size"]
    with np.load(run / "codes.npz") as f:
        codes = {k: f[k] for k in f.files}
    results = [bench_one(name, precision, codes, args) for name in args.variants for precision in args.precisions]
    cols = ["variant", "precision", "parameters", "epochs", "train_seconds", "test_bits_per_code", "test_accuracy", "uniform_bits"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps({"bench": "prior", "budget_s": args.budget, "run_dir": str(run),
                      "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras {keras.__version__} "
                                 f"({keras.backend.backend()})", "results": results}))


if __name__ == "__main__":
    main()
