"""Benchmark: sample realism and quality against diversity over sampling temperatures and top-k.

    brainvq bench temperature --run-dir RUN [--n 320] [--settings 0.6 0.7 0.8 1.0 1.0,8]

Needs a run whose notebooks 01-04 ran (``vqvae.keras``, ``prior.keras``, ``codes.npz``).
For each setting ``T`` or ``T,k`` (temperature, top-k; k = 0 keeps every code) it draws
``--n`` code maps (at the slice positions of ``--n`` validation slices, as notebook 05 does;
the same seed for every setting; the run's other sampling settings), decodes them and scores
them as notebook 05 does: the two-sample realism AUC of the reconstructions of those
validation slices against the samples (the prior alone; 0.5 = indistinguishable), the share
of samples whose nearest-neighbour SSIM against the training slices is above 0.6 (empty
samples never count), the share of empty samples, and the mean pairwise SSIM among the
samples (diversity) beside the real test slices'. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from brainvq_utils import generation, metrics, pipeline, realism, sampling  # noqa: E402
from brainvq_utils.config import SamplingConfig  # noqa: E402
from brainvq_utils.errors import BrainVQError  # noqa: E402


def parse_setting(text: str):
    """'0.7' -> (0.7, None); '1.0,8' -> (1.0, 8)."""
    try:
        parts = text.split(",")
        temperature = float(parts[0])
        top_k = int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise BrainVQError(f"setting {text!r}: write a temperature (0.7) or temperature,top_k (1.0,8)") from None
    if len(parts) > 2:
        raise BrainVQError(f"setting {text!r}: write a temperature (0.7) or temperature,top_k (1.0,8)")
    return temperature, (top_k or None)


def main():
    parser = argparse.ArgumentParser(prog="brainvq bench temperature", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="a run directory where notebooks 01-04 ran")
    parser.add_argument("--n", type=int, default=320, help="samples per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=["0.6", "0.7", "0.8", "1.0", "1.0,8"])
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.settings]
    run = Path(args.run_dir)
    if not run.is_dir():
        raise BrainVQError(f"run directory {run} does not exist; pass one where `brainvq run` finished 01-04")
    params = json.loads(pipeline.require(run, "run.json").read_text())["parameters"]
    ctx = pipeline.start(params["profile"], params["dataset"], params["data_dir"], str(run), params["overrides"])
    data_cfg = pipeline.dataset_config_from_run(ctx)
    vqvae = pipeline.load_vqvae(ctx)
    prior, info = pipeline.load_prior(ctx, vqvae)
    codes = pipeline.load_codes(ctx)
    ds = pipeline.open_dataset(data_cfg)
    train_images, test_images = ds.train.load(data_cfg.image_size), ds.test.load(data_cfg.image_size)

    scfg = ctx.stage(SamplingConfig)
    ev = pipeline.evaluation_sets(ds, codes, vqvae, info, data_cfg.image_size, args.n, args.seed)
    recon, groups = ev["reconstructions"]
    recon_features = realism.texture_features(recon)
    real_nn, _ = metrics.nearest_neighbour_ssim(test_images, train_images, candidates=generation.NN_CANDIDATES)
    real = {"setting": "real test slices", "nn_ssim_mean": round(float(real_nn.mean()), 4),
            "frac_above_0_6": round(float((real_nn > 0.6).mean()), 4),
            "diversity": round(metrics.mean_pairwise_ssim(test_images, 400), 4)}
    results = []
    for temperature, top_k in settings:
        kwargs = {**pipeline.sampling_kwargs(scfg), "temperature": temperature, "top_k": top_k}
        start = time.perf_counter()
        maps = sampling.sample(prior, len(recon), seed=args.seed, batch_size=64, **kwargs, **ev["conditions"])
        seconds = time.perf_counter() - start
        images = pipeline.decode_codes(vqvae, maps)
        empty = realism.empty_images(images)
        nn, _ = metrics.nearest_neighbour_ssim(images, train_images, candidates=generation.NN_CANDIDATES)
        test = realism.two_sample_test(recon, images, groups, [f"sample~{g}" for g in groups],
                                       features_a=recon_features)
        diversity = metrics.mean_pairwise_ssim(images, 400)
        results.append({"setting": f"T={temperature}" + (f", top_k={top_k}" if top_k else ""),
                        "temperature": temperature, "top_k": top_k or 0,
                        "auc_reconstructions_vs_samples": round(test["auc"], 3),
                        "nn_ssim_mean": round(float(nn[~empty].mean()), 4) if (~empty).any() else float("nan"),
                        "frac_above_0_6": round(float(((nn > 0.6) & ~empty).mean()), 4),
                        "empty_fraction": round(float(empty.mean()), 4),
                        "diversity": round(diversity, 4),
                        "diversity_minus_real": round(diversity - real["diversity"], 4),
                        "sampling_seconds": round(seconds, 2)})
        print(f"  {results[-1]['setting']}: done", flush=True)
    cols = ["setting", "auc_reconstructions_vs_samples", "nn_ssim_mean", "frac_above_0_6", "empty_fraction",
            "diversity", "diversity_minus_real"]
    print(" | ".join(cols))
    print(" | ".join(str(real.get(c, "")) for c in cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps({"bench": "temperature", "n": args.n, "run_dir": str(run), "real": real, "results": results,
                      "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras {keras.__version__} "
                                 f"({keras.backend.backend()})"}))


if __name__ == "__main__":
    main()
