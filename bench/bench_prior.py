"""Benchmark: the priors at equal training time, ranked by realism and by bits per code.

    brainvq bench prior --run-dir RUN [--budget 240] [--variants maskgit gated+location+position ...]
                        [--precisions ...] [--n 320]

Needs a run whose notebook 04 wrote ``codes.npz`` (the VQ-VAE's code maps of every split)
and ``vqvae.keras``. Each variant trains from scratch on the train codes for ``--budget``
seconds (validation time included) with the profile's prior settings, then:

- bits per code on the test codes (cross-entropy in bits, as the prior's ``code_bits``
  counts it: exact for the PixelCNNs, a 12-group code length for MaskGIT);
- realism: ``--n`` samples drawn at the slice positions of ``--n`` validation slices, decoded,
  and the two-sample AUC of the VQ-VAE's reconstructions of those slices against them (the
  prior alone; 0.5 = indistinguishable) and of real test slices against them;
- the share of empty samples, and the seconds sampling took.

Variants: the masked-token transformer (``maskgit``), the masked baseline (keras.io-sized:
128 channels, 2 residual blocks) and the gated prior unconditioned (the like-for-like pair
of the PixelCNN reports), with the grid-location embedding, with location and slice
position, and with a location map per slice position as well (``gated+level``, the default). A coarser code grid needs its own VQ-VAE: run the pipeline with ``-p downsample=8``
and point ``--run-dir`` at that run. ``--precisions float32 mixed_bfloat16`` trains each
variant in both arithmetics (default: the profile's ``prior_precision``). The table is
ranked by the realism AUC (lower is better). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from brainvq_utils import outline, pipeline, priors, realism, sampling, training  # noqa: E402
from brainvq_utils.config import PRECISIONS, PriorConfig, SamplingConfig, load_params, stage_config  # noqa: E402
from brainvq_utils.priors import prior_info  # noqa: E402

VARIANTS = {
    # a transformer learns more per second from batches of 16 than of 4 (the PixelCNNs' demo batch)
    "maskgit": dict(prior_arch="maskgit", condition_on_position=True, prior_batch_size=16, prior_learning_rate=1e-3),
    "pixelcnn": dict(prior_arch="pixelcnn", prior_channels=128, prior_layers=2, condition_on_position=False,
                     prior_location=False),
    "gated": dict(prior_arch="gated", condition_on_position=False, prior_location=False),
    "gated+location": dict(prior_arch="gated", condition_on_position=False, prior_location=True),
    "gated+location+position": dict(prior_arch="gated", condition_on_position=True, prior_location=True,
                                    prior_level_location=False),
    "gated+level": dict(prior_arch="gated", condition_on_position=True, prior_location=True,
                        prior_level_location=True),
    "layout": dict(prior_arch="layout", condition_on_position=True, prior_location=True, prior_level_location=True),
}
CURVE = (90.0, 180.0, 270.0, 540.0, 1080.0)


def reference_sets(run: Path, n: int, seed: int = 0):
    """Validation slices (positions, subjects), their reconstructions' features, and real test
    slices' features, from the run's data set and VQ-VAE."""
    data_cfg = pipeline.dataset_config_from_run(pipeline.NotebookContext({}, run))
    ds = pipeline.open_dataset(data_cfg, build_synthetic=False)
    vqvae = keras.saving.load_model(run / "vqvae.keras")
    with np.load(run / "codes.npz") as f:
        codes = {k: f[k] for k in f.files}
    info = {"num_positions": int(codes["num_positions"]), "num_classes": 0}
    ev = pipeline.evaluation_sets(ds, codes, vqvae, info, data_cfg.image_size, n, seed)
    ev["band"] = outline.OutlineBand(ds.train.images(data_cfg.image_size), np.asarray(ds.train.slices))
    ev["real_outline_broken"] = float(ev["band"].broken(ev["real"][0], ev["positions"]["real"]).mean())
    ev["brain_codes"] = pipeline.brain_codes(vqvae, codes["train_codes"])
    return codes, vqvae, ev, {"reconstructions": realism.texture_features(ev["reconstructions"][0]),
                              "real": realism.texture_features(ev["real"][0])}


def bench_one(name, precision, codes, vqvae, ev, feats, args, budget=None):
    overrides = {**VARIANTS[name], "prior_time_budget_s": budget or args.budget, "prior_epochs": 10_000}
    if precision is not None:
        overrides["prior_precision"] = precision
    params = load_params(args.profile, overrides)
    cfg, scfg = stage_config(PriorConfig, params), stage_config(SamplingConfig, params)
    k = args.num_codes
    grid = codes["train_codes"].shape[1:]
    positions = int(codes["num_positions"]) if cfg.condition_on_position else 0

    def inputs(split):
        return priors.prior_inputs(codes[f"{split}_codes"], codes[f"{split}_position"] if positions else None)

    build = training.prior_builder(cfg, k, grid, positions, brain_codes=ev["brain_codes"])
    with tempfile.TemporaryDirectory() as tmp:
        keras.utils.set_random_seed(cfg.prior_seed)
        prior, history = training.train_prior(
            priors.code_dataset(inputs("train"), cfg.prior_batch_size, shuffle=True, seed=cfg.prior_seed),
            priors.code_dataset(inputs("validate"), cfg.prior_batch_size), cfg, build, tmp, verbose=0)
        scores = training.prior_scores(prior, priors.code_dataset(inputs("test"), 64))
    cond = {"position": ev["conditions"]["position"]} if prior_info(prior)["num_positions"] else {}
    start = time.perf_counter()
    maps = sampling.sample(prior, len(ev["reconstructions"][0]), seed=scfg.sample_seed, batch_size=64,
                           **pipeline.sampling_kwargs(scfg), **cond)
    sampling_seconds = time.perf_counter() - start
    samples = pipeline.decode_codes(vqvae, maps)
    groups = np.asarray([f"sample~{s}" for s in ev["reconstructions"][1]])
    prior_alone = realism.two_sample_test(ev["reconstructions"][0], samples, ev["reconstructions"][1], groups,
                                          features_a=feats["reconstructions"])
    whole = realism.two_sample_test(ev["real"][0], samples, ev["real"][1], groups, features_a=feats["real"])
    broken = ev["band"].broken(samples, ev["positions"]["real_other"])
    return {"variant": name, **{k_: v for k_, v in dataclasses.asdict(cfg).items() if k_ == "prior_arch"},
            "precision": build.precision, "parameters": int(prior.count_params()), "epochs": len(history["loss"]),
            "train_seconds": round(history["train_seconds"][-1], 1),
            "auc_reconstructions_vs_samples": round(prior_alone["auc"], 3),
            "auc_interval": [round(prior_alone["auc_low"], 3), round(prior_alone["auc_high"], 3)],
            "auc_real_vs_samples": round(whole["auc"], 3),
            "outline_broken": round(float(broken.mean()), 3), "real_outline_broken": round(ev["real_outline_broken"], 3),
            "empty_fraction": round(float(realism.empty_images(samples).mean()), 3),
            "test_bits_per_code": round(scores["bits_per_code"], 4), "test_accuracy": round(scores["accuracy"], 4),
            "sampling_seconds": round(sampling_seconds, 1), "temperature": scfg.temperature}


def default_variant(profile: str) -> str:
    """The variant that is the profile's own prior."""
    params = load_params(profile)
    if params["prior_arch"] in ("layout", "maskgit"):
        return params["prior_arch"]
    return "gated+level" if params["prior_level_location"] else "gated+location+position"


def main():
    parser = argparse.ArgumentParser(prog="brainvq bench prior", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="a run directory with codes.npz (notebook 04 ran)")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per variant")
    parser.add_argument("--n", type=int, default=320, help="samples (and validation slices) for the realism AUC")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--precisions", nargs="+", default=[None], choices=list(PRECISIONS),
                        help="train each variant in each of these (default: the profile's prior_precision)")
    parser.add_argument("--curve", action="store_true",
                        help="a learning curve: the profile's prior (or the one --variants names) trained for each of "
                             "--budgets seconds, with the outline score and the realism AUC at each")
    parser.add_argument("--budgets", nargs="*", type=float, default=list(CURVE), help="the curve's training seconds")
    args = parser.parse_args()
    if args.curve and (not args.budgets or min(args.budgets) <= 0):
        raise SystemExit(f"brainvq bench prior: error: a learning curve needs one or more positive budgets "
                         f"(--budgets {' '.join(str(int(b)) for b in CURVE)}); got {args.budgets}")
    run = Path(args.run_dir)
    for artefact in ("codes.npz", "vqvae.keras", "dataset.json"):
        if not (run / artefact).exists():
            raise SystemExit(f"brainvq bench prior: {run / artefact} is missing; run notebooks 01-04 into {run} first")
    args.num_codes = json.loads((run / "metrics.json").read_text())["vqvae"]["codebook_size"]
    codes, vqvae, ev, feats = reference_sets(run, args.n)
    if args.curve:
        variant = args.variants[0] if len(args.variants) == 1 else default_variant(args.profile)
        results = [bench_one(variant, None, codes, vqvae, ev, feats, args, budget=b) for b in sorted(args.budgets)]
    else:
        results = [bench_one(name, precision, codes, vqvae, ev, feats, args)
                   for name in args.variants for precision in args.precisions]
        results.sort(key=lambda r: r["auc_reconstructions_vs_samples"])
    cols = ["variant", "precision", "parameters", "epochs", "train_seconds", "auc_reconstructions_vs_samples",
            "auc_interval", "auc_real_vs_samples", "outline_broken", "real_outline_broken", "empty_fraction",
            "test_bits_per_code", "sampling_seconds"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps({"bench": "prior", "curve": args.curve, "budget_s": args.budget, "run_dir": str(run), "n": args.n,
                      "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras {keras.__version__} "
                                 f"({keras.backend.backend()})", "results": results}))


if __name__ == "__main__":
    main()
