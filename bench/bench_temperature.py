"""Benchmark: sample quality against diversity over sampling temperatures and top-k.

    brainvq bench temperature --run-dir RUN [--n 128] [--settings 0.6 0.7 0.8 1.0 1.0,8]

Needs a run whose notebooks 01-04 ran (``vqvae.keras``, ``prior.keras``, ``codes.npz``).
For each setting ``T`` or ``T,k`` (temperature, top-k; k = 0 keeps every code) it draws
``--n`` code maps with the fast sampler (conditioned on slice positions drawn like the
training data, as notebook 05 does; the same seed for every setting), decodes them and
scores them as notebook 05 does: mean nearest-neighbour SSIM against every training
slice, the share above 0.6, and the mean pairwise SSIM among the samples (diversity).
The real test slices are scored the same way for the ceiling and for the diversity
they have. The issue's targets: nearest-neighbour SSIM >= 0.6 for 90% of samples, and
diversity at most 0.05 above the real slices'. Prints a table and one JSON line.
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

from brainvq_utils import metrics, pipeline, sampling  # noqa: E402
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
    parser.add_argument("--n", type=int, default=128, help="samples per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=["0.5", "0.6", "0.7", "0.8", "1.0", "1.0,8"])
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

    real_nn, _ = metrics.nearest_neighbour_ssim(test_images, train_images)
    real = {"setting": "real test slices", "nn_ssim_mean": round(float(real_nn.mean()), 4),
            "frac_above_0_6": round(float((real_nn > 0.6).mean()), 4),
            "diversity": round(metrics.mean_pairwise_ssim(test_images, 400), 4)}
    cond = pipeline.sample_conditions(codes, info, args.n, args.seed)
    results = []
    for temperature, top_k in settings:
        start = time.perf_counter()
        maps = sampling.sample(prior, args.n, temperature=temperature, top_k=top_k, seed=args.seed, **cond)
        seconds = time.perf_counter() - start
        images = pipeline.decode_codes(vqvae, maps)
        nn, _ = metrics.nearest_neighbour_ssim(images, train_images)
        diversity = metrics.mean_pairwise_ssim(images, 400)
        results.append({"setting": f"T={temperature}" + (f", top_k={top_k}" if top_k else ""),
                        "temperature": temperature, "top_k": top_k or 0,
                        "nn_ssim_mean": round(float(nn.mean()), 4),
                        "frac_above_0_6": round(float((nn > 0.6).mean()), 4),
                        "diversity": round(diversity, 4),
                        "diversity_minus_real": round(diversity - real["diversity"], 4),
                        "sampling_seconds": round(seconds, 2)})
        print(f"  {results[-1]['setting']}: done", flush=True)
    cols = ["setting", "nn_ssim_mean", "frac_above_0_6", "diversity", "diversity_minus_real"]
    print(" | ".join(cols))
    print(" | ".join(str(real.get(c, "")) for c in cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps({"bench": "temperature", "n": args.n, "run_dir": str(run), "real": real, "results": results,
                      "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras {keras.__version__} "
                                 f"({keras.backend.backend()})"}))


if __name__ == "__main__":
    main()
