"""`python -m suite.run --grid NAME|PATH.yaml`: run a grid under Ray Tune, log every trial to MLflow.

Re-running the same command after an interruption trains only what is missing: grid points with a
FINISHED run are skipped (--rerun trains them again), unfinished ones resume from their last epoch.
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, Grid, load_grid
from .driver import Job, Runtime, ScalingJob, add_runtime_options, check_quick, drive, runtime_from
from .preflight import PreflightError


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Runtime]:
    ap = argparse.ArgumentParser(prog="python -m suite.run", description=__doc__.splitlines()[0])
    ap.add_argument("--grid", required=True, help="grid NAME in suite/grids/ (smoke, paper, full, scaling, lenet, ...) "
                    "or a .yaml path")
    add_runtime_options(ap, default_experiment="the grid's name")
    ap.add_argument("--rerun", action="store_true", help="train grid points that already have a FINISHED run")
    ap.add_argument("--concurrency", default=None, metavar="K,K,...",
                    help="sweep-scaling mode: run the whole grid once per level K (e.g. 1,2,4); on CPU at most K trials "
                         "at once, with GPUs K trials share each GPU (gpus-per-trial 1/K); runs are tagged sweep and "
                         "concurrency and get sweep_trials_per_hour; default experiment <grid>-concurrency")
    args = ap.parse_args(argv)
    if args.concurrency is not None:
        levels = args.concurrency.split(",")
        if not all(k.strip().isdigit() and int(k) >= 1 for k in levels):
            ap.error(f"--concurrency={args.concurrency!r} is invalid: use positive integers separated by commas, e.g. 1,2,4.")
        args.concurrency = [int(k) for k in levels]
    return args, runtime_from(ap, args)


def table(grid: Grid, finished: set[str]) -> str:
    lines = [f"{'#':>3} {'grid_key':16} {'method':12} {'dataset':7} {'seed':>4} {'epochs':>6} {'hidden':12} status"]
    for i, t in enumerate(grid.trials):
        status = "finished" if t.grid_key() in finished else "pending"
        lines.append(f"{i:>3} {t.grid_key():16} {t.label():12} {t.dataset:7} {t.seed:>4} {t.epochs:>6} "
                     f"{'x'.join(map(str, t.hidden)):12} {status}")
    reasons = sorted({d["reason"] for d in grid.dropped})
    lines.append(f"{len(grid.trials)} trials ({len(finished & {t.grid_key() for t in grid.trials})} already finished), "
                 f"{len(grid.dropped)} invalid combinations dropped" + (f" ({'; '.join(reasons)})" if reasons else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, rt = parse(argv)
    try:
        return sweep(args, rt)
    except (ConfigError, PreflightError) as e:  # every check's message is the one line the user sees
        print(f"error: {e}", file=sys.stderr)
        return 2


def sweep(args: argparse.Namespace, rt: Runtime) -> int:
    """Check the runtime (seconds), expand the grid (imports torch), drive it, print the summary."""
    check_quick(rt)
    grid = load_grid(args.grid, rt.overrides())
    title = f"grid {grid.name}"
    if args.concurrency:
        job = ScalingJob(grid.trials, args.experiment or f"{grid.name}-concurrency", title, rerun=args.rerun,
                         levels=args.concurrency)
    else:
        job = Job(grid.trials, args.experiment or grid.name, title, rerun=args.rerun)
    done = drive(rt, job, lambda finished: table(grid, finished))
    if done is None:
        return 0
    print(f"\n{'grid_key':16} {'trial':44} {'status':8} {'acc@min%':>8} {'acc@max%':>8} {'wall_s':>7}")
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"
    for r in done.rows:
        print(f"{r.key:16} {r.name:44} {r.status:8} {f(r.acc0, '8.4f')} {f(r.acc_max, '8.4f')} {f(r.wall_s, '7.0f')}")
    print(f"{sum(r.status == 'FINISHED' for r in done.rows)}/{done.expected} finished. Browse: {done.browse}")
    return 0 if done.ok else 1


if __name__ == "__main__":
    sys.exit(main())
