"""Benchmark: the data path at ADNI size, in bounded memory.

    brainvq bench data [--sizes 10000 30000] [--image-size 128] [--n 200] [--steps 200]

For each size, an ADNI-layout folder of synthetic 256x240 JPEG slices (``AD_NC/{train,test}/
{AD,NC}``, 32 slices a subject) is written once under ``data/bench-adni-<subjects>`` and reused.
Then each step runs in a fresh process (so that its peak resident memory is its own):

- ``epoch``: one shuffled epoch of the training split through ``SliceSplit.dataset`` (decode,
  resize, cache, shuffle, batch) as the trainer reads it: images/s;
- ``train``: ``--steps`` VQ-VAE training steps (the demo profile's model, batch 8) fed by that
  pipeline: images/s and the share of step time spent waiting on input;
- ``encode``: every split encoded to code maps by the (untrained) demo VQ-VAE: images/s;
- ``score``: the generation scores of notebook 05 (``generation.generation_scores``) for ``--n``
  test slices standing in for samples, against the whole training split
  (``SliceSplit.images``: read a chunk at a time when large; ``--in-memory``: all of it loaded
  into one array first, as notebook 05 did before): seconds.

Prints a table (images/s, seconds, peak resident memory of each step) and one JSON line. The
target (issue 10): every step at most 3 GiB, growing by less than 10% from 10,000 to 30,000
slices.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STEPS = ("epoch", "train", "encode", "score")


def cohort_dir(size: int) -> tuple[Path, int]:
    from brainvq_utils import paths
    subjects = math.ceil(size / 32)
    return paths.data_dir() / f"bench-adni-{subjects}", subjects


def ensure_cohort(size: int) -> Path:
    from brainvq_utils.synthetic import build_cohort
    root, subjects = cohort_dir(size)
    if not (root / "cohort.json").exists():
        print(f"writing {subjects * 32} ADNI-layout slices to {root} (once)", flush=True)
        start = time.perf_counter()
        build_cohort(root, subjects=subjects, size=256, layout="adni", overwrite=True)
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def demo_vqvae(image_size: int):
    from brainvq_utils.config import VQVAEConfig, load_params, stage_config
    from brainvq_utils.training import compile_vqvae
    from brainvq_utils.vqvae import build_vqvae
    cfg = stage_config(VQVAEConfig, load_params("demo"))
    model = build_vqvae(image_size, cfg.num_codes, cfg.code_dim, cfg.channels, cfg.res_blocks, cfg.downsample,
                        cfg.beta, cfg.update, cfg.decay, cfg.restart_below, cfg.architecture, cfg.seed)
    return compile_vqvae(model, cfg)


def run_step(step: str, root: Path, image_size: int, n: int, steps: int, batch: int, in_memory: bool = False) -> dict:
    """One step in this process; returns its figures."""
    import numpy as np

    from brainvq_utils.data import load_dataset
    ds = load_dataset("adni", root)
    images = sum(len(s) for s in ds.splits().values())
    out = {"step": step, "slices": images, "train": len(ds.train)}
    start = time.perf_counter()
    if step == "epoch":
        count = 0
        for x in ds.train.dataset(image_size, batch, shuffle=True, seed=0):
            count += len(x)
        out["images_per_s"] = count / (time.perf_counter() - start)
    elif step == "train":
        import keras
        model = demo_vqvae(image_size)
        it = iter(ds.train.dataset(image_size, batch, shuffle=True, seed=0, repeat=True, with_targets=True))
        model.train_on_batch(*next(it))            # compile outside the timing
        waiting = computing = 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            x, y = next(it)
            t1 = time.perf_counter()
            model.train_on_batch(x, y)
            waiting, computing = waiting + t1 - t0, computing + time.perf_counter() - t1
        out["images_per_s"] = steps * batch / (waiting + computing)
        out["input_wait_share"] = waiting / (waiting + computing)
        keras.backend.clear_session()
    elif step == "encode":
        from brainvq_utils.codebook import encode_split
        model = demo_vqvae(image_size)
        maps = {name: encode_split(model, split, image_size) for name, split in ds.splits().items()}
        out["images_per_s"] = sum(len(m) for m in maps.values()) / (time.perf_counter() - start)
        out["codes_mib"] = sum(m.nbytes for m in maps.values()) / 2**20
    elif step == "score":
        from brainvq_utils import generation
        rng = np.random.default_rng(0)
        test = ds.test.subset(np.sort(rng.choice(len(ds.test), min(n, len(ds.test)), replace=False)))
        queries = test.load(image_size)
        noise = rng.uniform(0, 1, (min(100, n), image_size, image_size, 1)).astype("float32")
        reference = ds.train.load(image_size) if in_memory else ds.train.images(image_size)
        out["reference"] = type(reference).__name__
        section, _ = generation.generation_scores(queries, reference, queries, noise, 0.0)
        out["nn_ssim_mean"] = section["nn_ssim_mean"]
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main():
    parser = argparse.ArgumentParser(prog="brainvq bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument("--image-size", type=int, default=128, help="the pipeline's image size (demo: 128)")
    parser.add_argument("--n", type=int, default=200, help="images scored against the training split")
    parser.add_argument("--steps", type=int, default=200, help="training steps for the input-wait share")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--in-memory", action="store_true",
                        help="score: load the whole training split into one array first (as before issue 10)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)     # internal: one step, this process
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print("RESULT " + json.dumps(run_step(args.step, Path(args.root), args.image_size, args.n, args.steps,
                                              args.batch_size, args.in_memory)))
        return

    rows = []
    for size in args.sizes:
        root = ensure_cohort(size)
        for step in args.only:
            cmd = [sys.executable, __file__, "--step", step, "--root", str(root), "--image-size", str(args.image_size),
                   "--n", str(args.n), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                   *(["--in-memory"] if args.in_memory else [])]
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"step {step} at {size} slices failed:\n{done.stderr[-3000:]}")
            row = json.loads(lines[-1][len("RESULT "):])
            rows.append(row)
            print(f"{row['slices']:>6} slices  {step:<6}  {row['seconds']:>7.1f} s  "
                  f"{row.get('images_per_s', float('nan')):>8.1f} images/s  peak {row['peak_rss_mib'] / 1024:.2f} GiB"
                  + (f"  input wait {row['input_wait_share']:.1%}" if "input_wait_share" in row else ""), flush=True)

    print("\n| step | " + " | ".join(f"{r['slices']:,} slices" for r in rows if r["step"] == args.only[0]) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for step in args.only:
        cells = [f"{r['peak_rss_mib'] / 1024:.2f} GiB, {r['seconds']:.0f} s"
                 + (f", {r['images_per_s']:.0f} images/s" if "images_per_s" in r else "")
                 + (f", input wait {r['input_wait_share']:.0%}" if "input_wait_share" in r else "")
                 for r in rows if r["step"] == step]
        print(f"| {step} | " + " | ".join(cells) + " |")
    growth = {}
    if len(args.sizes) >= 2:
        for step in args.only:
            peaks = [r["peak_rss_mib"] for r in rows if r["step"] == step]
            growth[step] = peaks[-1] / peaks[0] - 1
        print("growth of peak memory from the smallest to the largest size: "
              + ", ".join(f"{k} {v:+.1%}" for k, v in growth.items()))
    import keras
    print(json.dumps({"bench": "data", "image_size": args.image_size, "sizes": args.sizes,
                      "in_memory": args.in_memory, "results": rows,
                      "peak_growth": growth,
                      "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, keras {keras.__version__} "
                                 f"({keras.backend.backend()})"}))


if __name__ == "__main__":
    main()
