"""Benchmark: VQ-VAE training on the demo cohort, ours against the keras.io anchor.

    brainvq bench train [--arch residual keras_io] [--budget 300] [--steps-per-epoch 100] [-p KEY=VALUE ...]

For each architecture: training images/s (validation time excluded), seconds of training
to reach a validation SSIM of 0.90 and 0.95 (checked after every `steps-per-epoch` steps,
validation time included), peak resident memory of the benchmark process up to the end
of that run (runs are sequential in one process), and the test-split SSIM (mean, p05),
PSNR and codebook use when the time budget is spent. Prints a table and one JSON line.

The anchor is the architecture of the keras.io VQ-VAE example (two stride-2 convolutions,
128 codes of 16 dimensions learned by gradient, no restarts) run through our pipeline:
same data, batch size, optimiser, schedule, loss and budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from brainvq_utils import pipeline, training  # noqa: E402
from brainvq_utils.cli import _key_values  # noqa: E402
from brainvq_utils.config import DataConfig, VQVAEConfig, load_params, stage_config  # noqa: E402
from brainvq_utils.runs import new_run_dir  # noqa: E402

ANCHOR = dict(architecture="keras_io", num_codes=128, code_dim=16, update="gradient", restart_below=0.0)


def first_time_above(history, threshold):
    for ssim, seconds in zip(history["val_ssim"], history["train_seconds"]):
        if ssim >= threshold:
            return round(seconds, 1)
    return None


def bench_one(arch, args, overrides):
    params = load_params(args.profile, {**overrides, **(ANCHOR if arch == "keras_io" else {}),
                                        "time_budget_s": args.budget, "epochs": 10_000,
                                        "steps_per_epoch": args.steps_per_epoch})
    data_cfg, cfg = stage_config(DataConfig, params), stage_config(VQVAEConfig, params)
    ds = pipeline.open_dataset(data_cfg)
    size = data_cfg.image_size
    train_ds = ds.train.dataset(size, data_cfg.batch_size, shuffle=True, seed=data_cfg.seed, with_targets=True)
    run_dir = new_run_dir(f"bench-train-{arch}-{time.strftime('%Y%m%d-%H%M%S')}", args.profile)
    keras.utils.set_random_seed(cfg.seed)
    model, history = training.train_vqvae(train_ds, ds.validate.dataset(size, 64), cfg, size, run_dir, verbose=0)
    scores = training.reconstruction_scores(model, ds.test.dataset(size, 64))
    m = training.vqvae_metrics(model, scores, history["train_seconds"][-1])
    steps = len(history["loss"]) * cfg.steps_per_epoch
    pure = history["train_seconds"][-1] - sum(history["val_seconds"])
    return {"arch": arch, "codes": f"{cfg.num_codes}x{cfg.code_dim}", "update": cfg.update,
            "latent_grid": m["latent_grid"], "params": int(model.count_params()),
            "images_per_s": round(steps * data_cfg.batch_size / pure, 1),
            "s_to_val_ssim_0_90": first_time_above(history, 0.90),
            "s_to_val_ssim_0_95": first_time_above(history, 0.95),
            "train_seconds": round(history["train_seconds"][-1], 1),
            "test_ssim_mean": round(m["test_ssim_mean"], 4), "test_ssim_p05": round(m["test_ssim_p05"], 4),
            "test_psnr_mean": round(m["test_psnr_mean"], 2),
            "codebook_used_fraction": round(m["codebook_used_fraction"], 4),
            "perplexity": round(m["perplexity"], 1), "test_images": m["test_images"],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
            "run_dir": str(run_dir)}


def main():
    parser = argparse.ArgumentParser(prog="brainvq bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["residual", "keras_io"], choices=["residual", "keras_io"])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per architecture")
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = _key_values(args.param)
    results = [bench_one(arch, args, overrides) for arch in args.arch]
    cols = ["arch", "codes", "update", "images_per_s", "s_to_val_ssim_0_90", "s_to_val_ssim_0_95",
            "test_ssim_mean", "test_ssim_p05", "test_psnr_mean", "codebook_used_fraction", "perplexity",
            "peak_rss_mib"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps({"bench": "train", "profile": args.profile, "budget_s": args.budget,
                      "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras {keras.__version__} "
                                 f"({keras.backend.backend()})", "results": results}))


if __name__ == "__main__":
    main()
