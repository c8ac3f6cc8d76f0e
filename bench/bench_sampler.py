"""Benchmark: the reference sampler against the fast (cached, compiled) sampler.

    brainvq bench sampler [--run-dir RUN] [--arch gated pixelcnn] [--ref-positions 64] [--batch 16]

For each prior: seconds for one batch of 32x32 code maps by the fast sampler (best of 3
after a first, compiling call) and by the reference sampler (the whole prior on the whole
grid at every position, as in the keras.io example). The reference is timed over the
first ``--ref-positions`` positions and scaled to the full grid (every reference step is
the same full forward pass, so the scaling is exact up to noise); ``--ref-positions 0``
times the whole grid. The codes the reference drew are checked against the fast
sampler's for the same seed. Priors: the run's trained ``prior.keras`` when ``--run-dir``
is given, else the demo-sized gated prior (64 channels, 8 layers) and the keras.io-sized
baseline (128 channels, 2 residual blocks) with untrained weights (speed does not depend
on the weights), K = 512. Prints a table and one JSON line.
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
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from brainvq_utils.priors import build_prior, prior_info  # noqa: E402
from brainvq_utils.sampling import gumbel_noise, pick_codes, sample  # noqa: E402


def reference_partial(prior, batch, seed, positions, cond):
    """The reference loop over the first ``positions`` positions, with sample()'s noise."""
    info = prior_info(prior)
    (h, w), k = info["grid"], info["num_codes"]
    noise = gumbel_noise((batch, h, w, k), keras.random.SeedGenerator(seed))
    codes = np.zeros((batch, h, w), "int32")
    inputs = {"codes": codes, **cond}
    temperature = ops.convert_to_tensor(1.0, "float32")
    prior.predict_on_batch(inputs)                     # build the predict function first
    start = time.perf_counter()
    for p in range(positions):
        i, j = divmod(p, w)
        logits = prior.predict_on_batch(inputs)
        codes[:, i, j] = ops.convert_to_numpy(pick_codes(ops.convert_to_tensor(logits[:, i, j]),
                                                         noise[:, i, j], temperature, None))
    return codes, time.perf_counter() - start


def bench_one(name, prior, args):
    info = prior_info(prior)
    h, w = info["grid"]
    cond = {}
    if info["num_positions"]:
        cond["position"] = np.full(args.batch, info["num_positions"] // 2, "int32")
    if info["num_classes"]:
        cond["label"] = np.zeros(args.batch, "int32")
    t = time.perf_counter()
    fast_codes = sample(prior, args.batch, seed=args.seed, batch_size=args.batch, **cond)
    first = time.perf_counter() - t
    times = []
    for _ in range(3):
        t = time.perf_counter()
        sample(prior, args.batch, seed=args.seed, batch_size=args.batch, **cond)
        times.append(time.perf_counter() - t)
    positions = args.ref_positions or h * w
    ref_codes, ref_s = reference_partial(prior, args.batch, args.seed, positions, cond)
    ref_full = ref_s * (h * w) / positions
    flat_fast, flat_ref = fast_codes.reshape(args.batch, -1), ref_codes.reshape(args.batch, -1)
    identical = bool((flat_fast[:, :positions] == flat_ref[:, :positions]).all())
    return {"prior": name, "arch": info["arch"], "channels": info["channels"], "layers": info["num_layers"],
            "num_codes": info["num_codes"], "grid": [h, w], "batch": args.batch,
            "fast_s": round(min(times), 3), "fast_first_call_s": round(first, 2),
            "reference_s": round(ref_full, 1), "reference_positions_timed": positions,
            "speedup": round(ref_full / min(times), 1), "identical_codes": identical}


def main():
    parser = argparse.ArgumentParser(prog="brainvq bench sampler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=None, help="use this run's prior.keras")
    parser.add_argument("--arch", nargs="+", default=["gated", "pixelcnn"], choices=["gated", "pixelcnn"])
    parser.add_argument("--ref-positions", type=int, default=64, help="0: time the whole grid")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.run_dir:
        priors = {"trained (run)": keras.saving.load_model(Path(args.run_dir) / "prior.keras")}
    else:
        sizes = {"gated": dict(channels=64, num_layers=8), "pixelcnn": dict(channels=128, num_layers=2)}
        priors = {f"{a} (untrained)": build_prior(a, num_codes=512, grid=(32, 32), **sizes[a]) for a in args.arch}
    results = [bench_one(name, prior, args) for name, prior in priors.items()]
    cols = ["prior", "channels", "layers", "fast_s", "fast_first_call_s", "reference_s", "speedup", "identical_codes"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(json.dumps({"bench": "sampler", "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras "
                      f"{keras.__version__} ({keras.backend.backend()})", "results": results}))


if __name__ == "__main__":
    main()
