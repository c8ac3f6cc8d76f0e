"""Benchmark: VQ-VAE training on the demo cohort, ours against the keras.io anchor, on 1 or more devices.

    brainvq bench train [--arch residual keras_io] [--budget 300] [--steps-per-epoch 100]
                        [--devices 1 2] [-p KEY=VALUE ...]

For each architecture and device count: training images/s (validation time excluded), seconds of
training to reach a validation SSIM of 0.90 and 0.95 (checked after every `steps-per-epoch`
steps, validation time included), peak resident memory of the benchmark process up to the end
of that run (runs are sequential in one process), and the test-split SSIM (mean, p05), PSNR and
codebook use when the time budget is spent. Prints a table and one JSON line.

The anchor is the architecture of the keras.io VQ-VAE example (two stride-2 convolutions,
128 codes of 16 dimensions learned by gradient, no restarts) run through our pipeline:
same data, batch size, optimiser, schedule, loss and budget.

`--devices 1 2` trains the same global batch (`batch_size`) on each device count
(`brainvq_utils.devices`: MirroredStrategy under TensorFlow, DataParallel under JAX) and
prints images/s per device count and the scaling efficiency, images/s on N devices over N
times images/s on one. On a machine without accelerators the CPU is split into virtual
devices that share the same cores: that shows the multi-device path works and what its
overhead costs, not a speed-up. Seconds per epoch on a data set of M training slices are
M / images_per_s (README, "More than one device").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ANCHOR = dict(architecture="keras_io", num_codes=128, code_dim=16, update="gradient", restart_below=0.0)


def first_time_above(history, threshold):
    for ssim, seconds in zip(history["val_ssim"], history["train_seconds"]):
        if ssim >= threshold:
            return round(seconds, 1)
    return None


def bench_one(arch, args, overrides, n_devices=1):
    import keras

    from brainvq_utils import pipeline, training
    from brainvq_utils.config import DataConfig, VQVAEConfig, load_params, stage_config
    from brainvq_utils.runs import new_run_dir

    params = load_params(args.profile, {**overrides, **(ANCHOR if arch == "keras_io" else {}),
                                        "time_budget_s": args.budget, "epochs": 10_000,
                                        "steps_per_epoch": args.steps_per_epoch, "devices": n_devices})
    data_cfg, cfg = stage_config(DataConfig, params), stage_config(VQVAEConfig, params)
    ds = pipeline.open_dataset(data_cfg)
    size = data_cfg.image_size
    train_ds = ds.train.dataset(size, data_cfg.batch_size, shuffle=True, seed=data_cfg.seed, with_targets=True)
    run_dir = new_run_dir(f"bench-train-{arch}-{n_devices}dev-{time.strftime('%Y%m%d-%H%M%S')}", args.profile)
    model, history = training.train_vqvae(train_ds, ds.validate.dataset(size, 64), cfg, size, run_dir, verbose=0,
                                          devices=n_devices, batch_size=data_cfg.batch_size)
    scores = training.reconstruction_scores(model, ds.test.dataset(size, 64))
    m = training.vqvae_metrics(model, scores, history["train_seconds"][-1])
    steps = len(history["loss"]) * cfg.steps_per_epoch
    pure = history["train_seconds"][-1] - sum(history["val_seconds"])
    return {"arch": arch, "devices": n_devices, "global_batch": data_cfg.batch_size,
            "codes": f"{cfg.num_codes}x{cfg.code_dim}", "update": cfg.update,
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
    parser.add_argument("--devices", nargs="+", type=int, default=[1],
                        help="device counts to train on, e.g. 1 2 (virtual CPU devices where there is no GPU)")
    parser.add_argument("-p", "--param", action="append", metavar="KEY=VALUE")
    args = parser.parse_args()
    if min(args.devices) < 1:
        parser.error(f"--devices {args.devices}: every count must be 1 or more")
    virtual = split_cpu_if_needed(max(args.devices))
    import keras

    from brainvq_utils.cli import _key_values

    overrides = _key_values(args.param)
    results = [bench_one(arch, args, overrides, n) for arch in args.arch for n in args.devices]
    for r in results:
        one = next((o for o in results if o["arch"] == r["arch"] and o["devices"] == 1), None)
        r["scaling_efficiency"] = round(r["images_per_s"] / (r["devices"] * one["images_per_s"]), 3) if one else None
    cols = ["arch", "devices", "codes", "update", "images_per_s", "scaling_efficiency", "s_to_val_ssim_0_90",
            "s_to_val_ssim_0_95", "test_ssim_mean", "test_ssim_p05", "test_psnr_mean", "codebook_used_fraction",
            "perplexity", "peak_rss_mib"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps({"bench": "train", "profile": args.profile, "budget_s": args.budget,
                      "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras {keras.__version__} "
                                 f"({keras.backend.backend()})",
                      "virtual_cpu_devices": virtual, "results": results}))


def split_cpu_if_needed(n_devices):
    """Where the backend has fewer than ``n_devices`` accelerators, split the CPU into that many
    virtual devices (before the backend starts); returns their number, or 0."""
    if n_devices == 1 or os.environ.get("BRAINVQ_VIRTUAL_CPUS"):
        return int(os.environ.get("BRAINVQ_VIRTUAL_CPUS", 0))
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf
        if len(tf.config.list_physical_devices("GPU")) >= n_devices:
            return 0
    elif _jax_accelerators() >= n_devices:
        return 0
    from brainvq_utils.devices import virtual_cpus
    virtual_cpus(n_devices)
    return n_devices


def _jax_accelerators():
    """Accelerators JAX would see, asked in a child process (importing JAX here would start it
    before XLA_FLAGS can split the CPU)."""
    import subprocess
    import sys
    probe = "import jax; print(sum(d.platform != 'cpu' for d in jax.devices()))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


if __name__ == "__main__":
    main()
