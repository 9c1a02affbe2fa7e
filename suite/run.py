"""`python -m suite.run --grid NAME|PATH.yaml`: run a grid under Ray Tune, log every trial to MLflow.

Re-running the same command after an interruption trains only what is missing: grid points with a
FINISHED run are skipped (--rerun trains them again), unfinished ones resume from their last epoch.
"""
from __future__ import annotations

import argparse
import fcntl
import shutil
import sys
import time
from pathlib import Path

from .config import ConfigError, Grid, load_grid



def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m suite.run", description=__doc__.splitlines()[0])
    ap.add_argument("--grid", required=True, help="grid NAME in tune_configs/ (smoke, paper, full, scaling) or a .yaml path")
    ap.add_argument("--experiment", help="MLflow experiment name (default: the grid's name)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)")
    ap.add_argument("--address", help="join an existing Ray cluster (e.g. auto, or ray://host:10001); default: start a local one")
    ap.add_argument("--cpus-per-trial", type=float, default=None,
                    help="CPU cores per trial (= torch threads); default 1 (see README for the measurement)")
    ap.add_argument("--gpus-per-trial", type=float, default=None,
                    help="GPUs per trial, fractional to share one GPU; default 0.25 when a GPU is visible, else 0")
    ap.add_argument("--max-concurrent", type=int, default=None, help="cap on trials running at once (default: as resources allow)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="override every trial's device")
    ap.add_argument("--data-dir", help="dataset cache dir (default: $BPB_DATA_DIR or ~/.cache/bayes-prune-bench)")
    ap.add_argument("--storage-path", help="Ray results + resume states (default: <cwd>/ray_results; shared storage on clusters)")
    ap.add_argument("--dry-run", action="store_true", help="print the expanded trial table and count, train nothing")
    ap.add_argument("--rerun", action="store_true", help="train grid points that already have a FINISHED run")
    ap.add_argument("--concurrency", default=None, metavar="K,K,...",
                    help="sweep-scaling mode: run the whole grid once per level K (e.g. 1,2,4); on CPU at most K trials "
                         "at once, with GPUs K trials share each GPU (gpus-per-trial 1/K); runs are tagged sweep and "
                         "concurrency and get sweep_trials_per_hour; default experiment <grid>-concurrency")
    args = ap.parse_args(argv)
    if args.concurrency is not None:
        try:
            args.concurrency = [int(k) for k in args.concurrency.split(",")]
            assert args.concurrency and min(args.concurrency) >= 1
        except (ValueError, AssertionError):
            ap.error(f"--concurrency={args.concurrency!r} is invalid: use positive integers separated by commas, e.g. 1,2,4.")
    if args.cpus_per_trial is not None and args.cpus_per_trial < 1:
        ap.error(f"--cpus-per-trial={args.cpus_per_trial} is invalid: use a number >= 1.")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        ap.error(f"--gpus-per-trial={args.gpus_per_trial} is invalid: use a number >= 0 (fractions share a GPU).")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        ap.error(f"--max-concurrent={args.max_concurrent} is invalid: use an integer >= 1.")
    return args


def table(grid: Grid, finished: set[str]) -> str:
    lines = [f"{'#':>3} {'grid_key':16} {'method':12} {'dataset':7} {'seed':>4} {'epochs':>6} {'hidden':12} status"]
    for i, t in enumerate(grid.trials):
        status = "finished" if t.grid_key() in finished else "pending"
        lines.append(f"{i:>3} {t.grid_key():16} {t.label():12} {t.dataset:7} {t.seed:>4} {t.epochs:>6} "
                     f"{'x'.join(map(str, t.hidden)):12} {status}")
    lines.append(f"{len(grid.trials)} trials ({len(finished & {t.grid_key() for t in grid.trials})} already finished), "
                 f"{len(grid.dropped)} invalid combinations dropped (bbb x dropout > 0)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    overrides = {"device": args.device} if args.device else {}
    if args.data_dir:
        overrides["data_dir"] = str(Path(args.data_dir).resolve())  # absolute: Ray moves trials' cwd
    try:
        grid = load_grid(args.grid, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    experiment = args.experiment or (f"{grid.name}-concurrency" if args.concurrency else grid.name)

    from . import tracking  # heavy imports only after the grid is known to be valid
    uri = args.tracking_uri or tracking.default_uri()
    store_exists = not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists()
    client = tracking.connect(uri) if store_exists or not args.dry_run else None
    exp = client.get_experiment_by_name(experiment) if client else None
    finished = tracking.finished_keys(client, exp.experiment_id) if exp else set()
    if args.dry_run:
        print(table(grid, finished))
        return 0

    from .data import DataError, load_arrays
    from .sweep import Resources, resume_dir, run_sweep  # sets Ray's environment defaults before ray is imported
    from .trial import check_compiler
    import ray
    try:
        exp_id = tracking.ensure_experiment(client, experiment)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    storage = Path(args.storage_path or "ray_results").resolve()
    lock = driver_lock(storage / experiment)
    if lock is None:
        print(f"error: another suite.run is already driving experiment {experiment!r} from {storage}: wait for it, "
              "or stop it (Ctrl-C) and run this command again to resume.", file=sys.stderr)
        return 2
    reaped = tracking.reap_stale(client, exp_id)
    if reaped:
        print(f"marked {reaped} run(s) left RUNNING by an interrupted sweep as KILLED")
    # a concurrency sweep times the whole grid at every level, so nothing counts as already done
    pending = grid.trials if args.rerun or args.concurrency else [t for t in grid.trials if t.grid_key() not in finished]
    # seed-major order: an interrupted sweep already holds every method's result for the first seeds
    pending = sorted(pending, key=lambda t: t.seed)
    done = sum(t.grid_key() in finished for t in grid.trials)
    print(f"grid {grid.name}: {len(grid.trials)} trials, {done} already finished, {len(pending)} to run"
          f"{' (--rerun)' if args.rerun else ''} -> experiment {experiment!r} at {uri}")
    if not pending:
        print("nothing to do")
        return 0
    try:  # fail before Ray starts if a dataset cannot be had; loaded once, shared via the object store
        if not args.address:  # on a cluster the workers' compilers matter, not the driver's
            for t in pending:
                check_compiler(t)
        arrays = {d: load_arrays(d, args.data_dir) for d in sorted({t.dataset for t in pending})}
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.rerun:  # a rerun trains from scratch, not from a leftover resume state
        for t in pending:
            shutil.rmtree(resume_dir(storage, experiment, t.grid_key()), ignore_errors=True)
    # address="local" always starts a fresh local instance: a bare ray.init() would silently attach to
    # whatever cluster `ray start` left registered on this machine (possibly a dead one).
    ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        # GPUs are counted on the cluster, not on the driver (a cluster's head usually has none)
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (0.25 if cluster_gpus else 0.0)
        if gpus and not cluster_gpus:
            print("error: --gpus-per-trial > 0 but the Ray cluster has no GPU (trials would wait forever).",
                  file=sys.stderr)
            return 2
        if not gpus and any(t.device == "cuda" for t in pending):
            print("error: device=cuda but trials get no GPU: pass --gpus-per-trial > 0 or use --device auto/cpu.",
                  file=sys.stderr)
            return 2
        res = Resources(cpus=args.cpus_per_trial or 1.0, gpus=gpus, max_concurrent=args.max_concurrent)
        if not args.concurrency:
            rows = run_sweep(pending, experiment, client, exp_id, storage, res, arrays)
        else:
            rows = []
            for k in args.concurrency:
                rows += concurrency_level(k, pending, experiment, client, exp_id, storage, res, arrays)
    finally:
        ray.shutdown()
    print(f"\n{'grid_key':16} {'trial':44} {'status':8} {'acc@min%':>8} {'acc@max%':>8} {'wall_s':>7}")
    for r in rows:
        f = (lambda v, fmt: format(v, fmt) if v is not None else "-")
        print(f"{r.key:16} {r.name:44} {r.status:8} {f(r.acc0, '8.4f')} {f(r.acc_max, '8.4f')} {f(r.wall_s, '7.0f')}")
    expected = len(pending) * len(args.concurrency or [1])
    ok = all(r.status == "FINISHED" for r in rows) and len(rows) == expected
    print(f"{sum(r.status == 'FINISHED' for r in rows)}/{expected} finished. "
          f"Browse: mlflow ui --backend-store-uri {uri}")
    return 0 if ok else 1


def driver_lock(folder: Path):
    """Hold an exclusive lock on <storage>/<experiment>/.driver.lock for this process's lifetime, or
    return None if another driver holds it. Why: a second driver would mark the first one's RUNNING
    runs KILLED and train the same grid points twice."""
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / ".driver.lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f  # released when the process exits


def concurrency_level(k: int, trials, experiment: str, client, exp_id: str, storage: Path, res, arrays) -> list:
    """One timed sweep of all trials with k at once (k per GPU when trials use GPUs)."""
    from .sweep import Resources, run_sweep
    sweep = f"{time.strftime('%Y%m%d-%H%M%S')}-c{k}"
    level = Resources(res.cpus, 1.0 / k, None) if res.gpus > 0 else Resources(res.cpus, 0.0, k)
    print(f"--- concurrency {k}: sweep {sweep}")
    t0 = time.perf_counter()
    rows = run_sweep(trials, f"{experiment}-{sweep}", client, exp_id, storage, level, arrays,
                     {"sweep": sweep, "concurrency": str(k)})
    wall = time.perf_counter() - t0
    per_hour = sum(r.status == "FINISHED" for r in rows) / wall * 3600
    for r in rows:
        client.log_metric(r.run_id, "sweep_trials_per_hour", per_hour)
        client.log_metric(r.run_id, "sweep_wall_s", wall)
    print(f"--- concurrency {k}: {len(rows)} trials in {wall:.0f} s = {per_hour:.1f} trials/hour")
    return rows


if __name__ == "__main__":
    sys.exit(main())
