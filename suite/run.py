"""`python -m suite.run --grid NAME|PATH.yaml`: run a grid under Ray Tune, log every trial to MLflow.

Re-running the same command after an interruption trains only what is missing: grid points with a
FINISHED run are skipped (--rerun trains them again), unfinished ones resume from their last epoch.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import preflight
from .config import ConfigError, Grid, load_grid
from .preflight import PreflightError


def add_runtime_options(ap: argparse.ArgumentParser, default_experiment: str) -> None:
    """Where and how trials run: the options suite.run and suite.search share."""
    ap.add_argument("--experiment", help=f"MLflow experiment name (default: {default_experiment})")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)")
    ap.add_argument("--address", help="join an existing Ray cluster: auto (the one `ray start` made here, or $RAY_ADDRESS) "
                    "or host:port of its GCS (e.g. 127.0.0.1:6379); default: start a local one")
    ap.add_argument("--cpus-per-trial", type=float, default=None,
                    help="CPU cores per trial (= torch threads); default 1 (see README for the measurement)")
    ap.add_argument("--gpus-per-trial", type=float, default=None,
                    help="GPUs per trial, fractional to share one GPU; default 0.25 when a GPU is visible, else 0")
    ap.add_argument("--max-concurrent", type=int, default=None,
                    help="cap on trials running at once (default: as resources allow)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="override every trial's device")
    ap.add_argument("--data-dir", help="dataset cache dir (default: $BPB_DATA_DIR or ~/.cache/bayes-prune-bench)")
    ap.add_argument("--storage-path", help="Ray results + resume states (default: <cwd>/ray_results; shared storage on clusters)")
    ap.add_argument("--dry-run", action="store_true", help="print the expanded trial table and count, train nothing")


def check_runtime_options(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.cpus_per_trial is not None and args.cpus_per_trial < 1:
        ap.error(f"--cpus-per-trial={args.cpus_per_trial} is invalid: use a number >= 1.")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        ap.error(f"--gpus-per-trial={args.gpus_per_trial} is invalid: use a number >= 0 (fractions share a GPU).")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        ap.error(f"--max-concurrent={args.max_concurrent} is invalid: use an integer >= 1.")


def runtime_overrides(args: argparse.Namespace) -> dict:
    """Config fields the runtime options set on every trial."""
    overrides = {"device": args.device} if args.device else {}
    if args.data_dir:
        overrides["data_dir"] = str(Path(args.data_dir).resolve())  # absolute: Ray moves trials' cwd
    return overrides


def parse(argv: list[str] | None) -> argparse.Namespace:
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
    check_runtime_options(ap, args)
    return args


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
    args = parse(argv)
    try:
        return sweep(args)
    except (ConfigError, PreflightError) as e:  # every check's message is the one line the user sees
        print(f"error: {e}", file=sys.stderr)
        return 2


def sweep(args: argparse.Namespace) -> int:
    """Validate everything that can be validated, then create the experiment, then train."""
    grid = load_grid(args.grid, runtime_overrides(args))
    experiment = args.experiment or (f"{grid.name}-concurrency" if args.concurrency else grid.name)
    done = drive(args, grid.trials, experiment, f"grid {grid.name}", lambda finished: table(grid, finished),
                 rerun=args.rerun, concurrency=args.concurrency)
    if done is None:
        return 0
    print(f"\n{'grid_key':16} {'trial':44} {'status':8} {'acc@min%':>8} {'acc@max%':>8} {'wall_s':>7}")
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"
    for r in done.rows:
        print(f"{r.key:16} {r.name:44} {r.status:8} {f(r.acc0, '8.4f')} {f(r.acc_max, '8.4f')} {f(r.wall_s, '7.0f')}")
    print(f"{sum(r.status == 'FINISHED' for r in done.rows)}/{done.expected} finished. Browse: {done.browse}")
    return 0 if done.ok else 1


@dataclass
class Driven:
    """What a drive left behind, for the caller's summary."""

    client: object
    exp_id: str
    rows: list
    expected: int
    browse: str
    parent_id: str | None = None

    @property
    def ok(self) -> bool:
        return len(self.rows) == self.expected and all(r.status in ("FINISHED", "STOPPED") for r in self.rows)


def drive(args: argparse.Namespace, trials: list, experiment: str, title: str, dry_table, *, rerun: bool = False,
          concurrency: list[int] | None = None, extra_tags: dict[str, str] | None = None, select: str | None = None,
          grace_period: int = 1, parent: dict[str, str] | None = None) -> Driven | None:
    """The shared driver of suite.run and suite.search: quick checks (tracking server, Ray address),
    the store's finished grid points, the driver lock, compilers and data, Ray, resources, and only
    then the experiment (and a parent run named `title` when `parent` tags are given), then the sweep.
    Returns None when there was nothing to train (or --dry-run printed dry_table(finished))."""
    uri = preflight.tracking_uri(args.tracking_uri)
    preflight.check_tracking(uri)
    if args.address and not args.dry_run:
        preflight.enable_ray_token_auth()  # before ray is imported below
        preflight.check_ray_address(args.address)

    from . import tracking  # heavy imports (mlflow, torch) only after the quick checks passed
    store_exists = not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists()
    client = tracking.connect(uri) if store_exists or not args.dry_run else None
    exp = client.get_experiment_by_name(experiment) if client else None
    finished = tracking.finished_keys(client, exp.experiment_id) if exp else set()
    if args.dry_run:
        print(dry_table(finished))
        return None

    import ray  # noqa: I001  (after .sweep on purpose)

    from .data import DataError, load_arrays
    from .sweep import resume_dir, run_sweep  # sets Ray's environment defaults before ray is imported
    from .trial import check_compiler
    try:
        tracking.check_not_deleted(exp, experiment)
    except ValueError as e:
        raise PreflightError(str(e)) from None
    storage = Path(args.storage_path or "ray_results").resolve()
    lock = driver_lock(storage / experiment)
    if lock is None:
        raise PreflightError(f"another suite.run is already driving experiment {experiment!r} from {storage}: wait "
                             "for it, or stop it (Ctrl-C) and run this command again to resume.")
    # a concurrency sweep times the whole grid at every level, so nothing counts as already done
    pending = trials if rerun or concurrency else [t for t in trials if t.grid_key() not in finished]
    # seed-major order: an interrupted sweep already holds every method's result for the first seeds
    pending = sorted(pending, key=lambda t: t.seed)
    done = sum(t.grid_key() in finished for t in trials)
    print(f"{title}: {len(trials)} trials, {done} already finished, {len(pending)} to run"
          f"{' (--rerun)' if rerun else ''} -> experiment {experiment!r} at {uri}")
    if not pending and parent is None:
        print("nothing to do")
        return None
    if not args.address:  # on a cluster the workers' compilers and GPUs matter, not the driver's
        for t in pending:
            check_compiler(t)
    try:  # fail before Ray starts if a dataset cannot be had; loaded once, shared via the object store
        arrays = {d: load_arrays(d, args.data_dir) for d in sorted({t.dataset for t in pending})}
    except DataError as e:
        raise PreflightError(str(e)) from None
    if select is not None:  # a search selects on validation data only: its trials never receive the test split
        arrays = {d: dataclasses.replace(a, x_test=a.x_test[:0], y_test=a.y_test[:0]) for d, a in arrays.items()}
    if rerun:  # a rerun trains from scratch, not from a leftover resume state
        for t in pending:
            shutil.rmtree(resume_dir(storage, experiment, t.grid_key()), ignore_errors=True)
    # address="local" always starts a fresh local instance: a bare ray.init() would silently attach to
    # whatever cluster `ray start` left registered on this machine (possibly a dead one).
    try:
        ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        if not args.address:
            raise
        # the port answered (checked above), so what remains is the cluster refusing us
        raise PreflightError(f"could not join the Ray cluster at {args.address} ({str(e).splitlines()[0]}): if it "
                             "uses token auth, put its token (`ray get-auth-token` on its head) into ~/.ray/auth_token "
                             "or $RAY_AUTH_TOKEN.") from None
    try:
        res = trial_resources(args, pending)
        exp_id = tracking.ensure_experiment(client, experiment)  # only now: a refused sweep leaves no experiment
        reaped = tracking.reap_stale(client, exp_id)
        if reaped:
            print(f"marked {reaped} run(s) left RUNNING by an interrupted sweep as KILLED")
        parent_id = tracking.parent_run(client, exp_id, title, parent) if parent is not None else None
        tags = {**(extra_tags or {}), **({"mlflow.parentRunId": parent_id} if parent_id else {})}
        if not pending:
            rows = []
        elif not concurrency:
            rows = run_sweep(pending, experiment, client, exp_id, storage, res, arrays, tags, select, grace_period)
        else:
            rows = []
            for k in concurrency:
                rows += concurrency_level(k, pending, experiment, client, exp_id, storage, res, arrays)
    finally:
        ray.shutdown()
    return Driven(client, exp_id, rows, len(pending) * len(concurrency or [1]), tracking.browse_hint(uri, exp_id),
                  parent_id)


def trial_resources(args: argparse.Namespace, pending: list):
    """CPUs / GPUs per trial, checked against the nodes of the cluster Ray is connected to."""
    from .sweep import Resources
    shapes, autoscaler_unknown = preflight.node_shapes()
    has_gpu = any(s.get("GPU", 0) for s in shapes)  # counted on the cluster: a cluster's head usually has none
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (0.25 if has_gpu else 0.0)
    if not gpus and any(t.device == "cuda" for t in pending):
        raise PreflightError("device=cuda but trials get no GPU: pass --gpus-per-trial > 0 or use --device auto/cpu.")
    res = Resources(cpus=args.cpus_per_trial or 1.0, gpus=gpus, max_concurrent=args.max_concurrent)
    try:
        preflight.check_fit(res.cpus, res.gpus, shapes)
    except PreflightError:
        if not autoscaler_unknown:
            raise
        # an autoscaler whose node types this machine cannot see (not a `ray up` head): it may add one
        print(f"no node fits a trial yet (nodes: {preflight.describe(shapes)}); waiting for the autoscaler to add one")
    return res


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
