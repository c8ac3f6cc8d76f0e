"""The ``brainvq`` command: run the pipeline, build the synthetic cohort, benchmark.

    brainvq run   [--profile P] [--dataset D] [--data-dir DIR] [--run-dir DIR] [-p KEY=VALUE ...] [--verbose]
    brainvq run   --resume RUN_DIR [--overwrite] [-p KEY=VALUE ...]      (continue a killed run)
    brainvq synth DIR [--subjects N] [--seed S] [--size N] [--layout oasis|adni]
    brainvq bench NAME [args ...]        (NAME: a script bench/bench_NAME.py)

User errors (BrainVQError) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import runpy
import signal
import sys
import threading

from .errors import BrainVQError


def _key_values(items) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BrainVQError(f"parameter {item!r} is not KEY=VALUE (e.g. -p epochs=5)")
        out[key.strip()] = value.strip()
    return out


def _cmd_run(args) -> int:
    from .runner import resume_notebooks, run_notebooks
    if args.resume:
        if args.run_dir and args.run_dir != args.resume:
            raise BrainVQError(f"--resume {args.resume} and --run-dir {args.run_dir} name two run directories; "
                               f"give only --resume RUN_DIR")
        if args.only is not None:
            raise BrainVQError("--only cannot be combined with --resume: a resumed run continues the notebooks "
                               "it was started with")
        resume_notebooks(args.resume, profile=args.profile, dataset=args.dataset, data_dir=args.data_dir,
                         overrides=_key_values(args.param), overwrite=args.overwrite, verbose=args.verbose)
        return 0
    run_notebooks(args.run_dir, profile=args.profile or "demo", dataset=args.dataset or "synthetic",
                  data_dir=args.data_dir, overrides=_key_values(args.param), overwrite=args.overwrite,
                  only=args.only, verbose=args.verbose)
    return 0


def _cmd_synth(args) -> int:
    from .synthetic import build_cohort
    manifest = build_cohort(args.dir, subjects=args.subjects, seed=args.seed, size=args.size,
                            layout=args.layout, atrophy=args.atrophy, overwrite=args.overwrite,
                            progress=True)
    n = manifest["subjects"] * manifest["slices_per_subject"]
    print(f"wrote {n} slices of {manifest['subjects']} subjects ({args.layout} layout) to {args.dir} "
          f"in {manifest.get('build_seconds', float('nan')):.1f} s")
    return 0


def _cmd_bench(args) -> int:
    from .paths import PROJ_ROOT
    script = PROJ_ROOT / "bench" / f"bench_{args.name}.py"
    if not script.exists():
        known = sorted(p.stem[len("bench_"):] for p in (PROJ_ROOT / "bench").glob("bench_*.py"))
        raise BrainVQError(f"no benchmark {args.name!r}; known: {', '.join(known) or 'none'}")
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainvq", description="VQ-VAE + PixelCNN brain MRI slices")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks headless into a run directory")
    run.add_argument("--profile", default=None, help="smoke | demo | full (default demo)")
    run.add_argument("--dataset", default=None,
                     help="synthetic | oasis | adni | folder | nifti | auto (default synthetic)")
    run.add_argument("--data-dir", default=None, help="folder of the data set (default: the synthetic cohort)")
    run.add_argument("--run-dir", default=None, help="run directory (default runs/<profile>-<time>)")
    run.add_argument("--overwrite", action="store_true",
                     help="write over an existing run directory; with --resume: take changed parameters and "
                          "run again the notebooks they change")
    run.add_argument("--resume", metavar="RUN_DIR", default=None,
                     help="continue a killed run: finished notebooks are not run again, training continues "
                          "from its last finished epoch")
    run.add_argument("--only", nargs="*", default=None, help="notebook prefixes to run, e.g. 01 02")
    run.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="override one parameter")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="show everything the notebooks and libraries print (default: a progress line per "
                          "notebook; the rest goes to <run_dir>/run.log)")
    run.set_defaults(func=_cmd_run)

    synth = sub.add_parser("synth", help="write the synthetic MNI152-derived cohort")
    synth.add_argument("dir")
    synth.add_argument("--subjects", type=int, default=100)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256)
    synth.add_argument("--layout", default="oasis", choices=["oasis", "adni"])
    synth.add_argument("--atrophy", action="store_true", help="add the simulated-atrophy group")
    synth.add_argument("--overwrite", action="store_true")
    synth.set_defaults(func=_cmd_synth)

    bench = sub.add_parser("bench", help="run a benchmark from bench/")
    bench.add_argument("name")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    if args.command == "run" and threading.current_thread() is threading.main_thread():
        # `kill PID` (a scheduler's time limit, say) stops a run as ^C does: the notebook kernel is shut
        # down and the run directory's lock released, so that `--resume` can go on at once.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except BrainVQError as err:
        print(f"brainvq: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print("brainvq: interrupted" + (f"; {err}" if str(err) else ""), file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
