"""Benchmark: the full profile on an OASIS-size synthetic cohort, stage by stage, in one command.

    brainvq bench gpu [--subjects 380] [--vqvae-budget 150] [--prior-budget 150] [--n 200] [--smoke]

Meant for a GPU (it runs anywhere): builds (once) a synthetic cohort the size of the OASIS course data
(380 subjects of 32 slices at 256x256: about 9,700 training slices), then runs the pipeline's stages
with the full profile's settings and short time budgets: one epoch through the input pipeline, the
VQ-VAE, encoding every split, the prior, sampling, and the scores (test SSIM, bits per code, the outline
score and the two-sample AUC of the samples against reconstructions). For each stage it prints the
seconds, the throughput and the peak memory (the GPU's where there is one, else the process's), and
one JSON line. About 10 minutes on one GPU. ``--smoke`` runs the same stages on the smoke profile with
a tiny cohort, on the CPU, in about a minute (tests/test_bench_gpu.py runs it in CI).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from brainvq_utils import outline, pipeline, priors, realism, sampling, training  # noqa: E402
from brainvq_utils.config import DataConfig, PriorConfig, SamplingConfig, VQVAEConfig, load_params, stage_config  # noqa: E402
from brainvq_utils.data import load_dataset  # noqa: E402
from brainvq_utils.paths import data_dir  # noqa: E402
from brainvq_utils.synthetic import build_cohort  # noqa: E402


def gpu_name() -> str | None:
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None


class Stage:
    """Times a stage and reads its peak memory: the GPU's (reset at the start) or the process's so far."""

    def __init__(self, name, rows):
        self.name, self.rows, self.gpu = name, rows, gpu_name() is not None

    def __enter__(self):
        if self.gpu:
            import tensorflow as tf
            tf.config.experimental.reset_memory_stats("GPU:0")
        self.start = time.perf_counter()
        self.row = {"stage": self.name}
        return self.row

    def __exit__(self, *exc):
        self.row["seconds"] = round(time.perf_counter() - self.start, 1)
        if self.gpu:
            import tensorflow as tf
            self.row["peak_gib"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30, 2)
        else:
            self.row["peak_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        if exc[0] is None:
            self.rows.append(self.row)
            print(f"  {self.name}: {self.row['seconds']} s", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="brainvq bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the smoke profile on a tiny cohort (CPU, CI)")
    parser.add_argument("--subjects", type=int, default=None, help="cohort size (default 380; smoke 20)")
    parser.add_argument("--vqvae-budget", type=float, default=150.0, help="VQ-VAE training seconds")
    parser.add_argument("--prior-budget", type=float, default=150.0, help="prior training seconds")
    parser.add_argument("--n", type=int, default=200, help="samples (and validation slices) scored")
    parser.add_argument("--data-dir", default=None, help="where the cohort is built (default: the data folder)")
    args = parser.parse_args(argv)
    profile = "smoke" if args.smoke else "full"
    subjects = args.subjects or (20 if args.smoke else 380)
    budgets = (0.0, 0.0) if args.smoke else (args.vqvae_budget, args.prior_budget)
    if min(args.vqvae_budget, args.prior_budget) <= 0 or args.n < 2 or subjects < 10:
        raise SystemExit("brainvq bench gpu: error: budgets must be positive, --n at least 2 and --subjects at least 10")
    params = load_params(profile, {"subjects": subjects, "time_budget_s": budgets[0],
                                   "prior_time_budget_s": budgets[1], "n_samples": args.n,
                                   **({} if args.smoke else {"epochs": 1000, "prior_epochs": 1000})})
    data_cfg, vq_cfg = stage_config(DataConfig, params), stage_config(VQVAEConfig, params)
    prior_cfg, s_cfg = stage_config(PriorConfig, params), stage_config(SamplingConfig, params)
    size = data_cfg.image_size
    root = Path(args.data_dir or data_dir()) / f"bench-gpu-{subjects}x{data_cfg.synth_size}"
    rows: list[dict] = []
    print(f"brainvq bench gpu: the {profile} profile on {subjects} synthetic subjects ({root}); "
          f"{gpu_name() or 'no GPU: on the CPU'}", flush=True)
    with Stage("build the cohort (once)", rows) as row:
        if not (root / "cohort.json").exists():
            build_cohort(root, subjects=subjects, size=data_cfg.synth_size)
        ds = load_dataset("synthetic", root)
        row["images"] = len(ds.train) + len(ds.validate) + len(ds.test)
    with Stage("one epoch through the input pipeline", rows) as row:
        n = sum(int(b.shape[0]) for b in ds.train.dataset(size, data_cfg.batch_size, shuffle=True))
        row["images"] = n
    row["images_per_s"] = round(n / max(row["seconds"], 1e-9), 1)
    with tempfile.TemporaryDirectory() as tmp, Stage("VQ-VAE training", rows) as row:
        train = ds.train.dataset(size, data_cfg.batch_size, shuffle=True, with_targets=True, factor=vq_cfg.downsample)
        model, history = training.train_vqvae(train, ds.validate.dataset(size, 64), vq_cfg, size, tmp, verbose=0,
                                              batch_size=data_cfg.batch_size)
        row["epochs"] = len(history["loss"])
        row["images_per_s"] = round(row["epochs"] * len(ds.train) / max(history["train_seconds"][-1], 1e-9), 1)
    with Stage("VQ-VAE test scores", rows) as row:
        scores = training.reconstruction_scores(model, ds.test.dataset(size, 64))
        row["test_ssim_mean"] = round(float(scores["ssim"].mean()), 4)
    with Stage("encoding every split", rows) as row:
        from brainvq_utils.codebook import encode_split
        codes = {f"{k}_codes": encode_split(model, s, size) for k, s in ds.splits().items()}
    row["images_per_s"] = round(sum(len(s) for s in ds.splits().values()) / max(row["seconds"], 1e-9), 1)
    positions = max(ds.train.slices) + 1
    for k, s in ds.splits().items():
        codes[f"{k}_position"] = np.asarray(s.slices, np.int32)
    brain = pipeline.brain_codes(model, codes["train_codes"])
    with tempfile.TemporaryDirectory() as tmp, Stage(f"prior training ({prior_cfg.prior_arch})", rows) as row:
        def inputs(split):   # as notebook 04 builds them
            return pipeline.split_inputs(codes, split, positions, 0)
        build = training.prior_builder(prior_cfg, vq_cfg.num_codes, model.latent_grid, positions, brain_codes=brain)
        prior, phist = training.train_prior(
            priors.code_dataset(inputs("train"), prior_cfg.prior_batch_size, shuffle=True),
            priors.code_dataset(inputs("validate"), prior_cfg.prior_batch_size), prior_cfg, build, tmp, verbose=0)
        row["epochs"] = len(phist["loss"])
        row["maps_per_s"] = round(row["epochs"] * len(ds.train) / max(phist["train_seconds"][-1], 1e-9), 1)
        row["test_bits_per_code"] = round(training.prior_scores(prior, priors.code_dataset(inputs("test"), 64))
                                          ["bits_per_code"], 4)
    info = priors.prior_info(prior)
    ev = pipeline.evaluation_sets(ds, codes, model, info, size, args.n, s_cfg.sample_seed)
    with Stage("sampling", rows) as row:
        maps = sampling.sample(prior, len(ev["reconstructions"][0]), seed=s_cfg.sample_seed, progress=False,
                               **pipeline.sampling_kwargs(s_cfg), **ev["conditions"])
        samples = pipeline.decode_codes(model, maps)
        row["maps"] = len(maps)
    row["maps_per_s"] = round(len(maps) / max(row["seconds"], 1e-9), 2)
    with Stage("scores", rows) as row:
        band = outline.OutlineBand(ds.train.images(size), np.asarray(ds.train.slices))
        row["outline_broken"] = round(float(band.broken(samples, ev["positions"]["real_other"]).mean()), 3)
        row["real_outline_broken"] = round(float(band.broken(ev["real"][0], ev["positions"]["real"]).mean()), 3)
        groups = np.asarray([f"sample~{s}" for s in ev["reconstructions"][1]])
        folds = min(s_cfg.realism_folds, len(set(ev["reconstructions"][1])))
        test = realism.two_sample_test(ev["reconstructions"][0], samples, ev["reconstructions"][1], groups, folds=folds)
        row["auc_reconstructions_vs_samples"] = round(test["auc"], 3)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu_name() or 'no GPU'}, keras {keras.__version__}"
    print(f"\n{'stage':42}{'seconds':>9}{'peak GiB':>10}  figures")
    for r in rows:
        more = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("stage", "seconds", "peak_gib"))
        print(f"{r['stage']:42}{r['seconds']:>9}{r['peak_gib']:>10}  {more}")
    print(f"total {round(sum(r['seconds'] for r in rows), 1)} s on {machine}")
    print(json.dumps({"bench": "gpu", "profile": profile, "subjects": subjects, "machine": machine, "stages": rows}))


if __name__ == "__main__":
    main()
