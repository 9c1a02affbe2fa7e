"""The driver suite.run and suite.search share: where and how trials run (`Runtime`) and what runs
(`Job`, `ScalingJob` or `SearchJob`), then one named step after another, cheapest first, so that bad
input fails within seconds and before anything is created: quick checks (the CLIs run them before
loading the grid) -> lock -> finished grid points -> pending -> compilers and data -> Ray ->
resources -> store and experiment -> sweep, which gets what the steps established as one `sweep.Setup`.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import locks, preflight
from .config import DEVICES, ConfigError, TrialConfig
from .preflight import PreflightError

if TYPE_CHECKING:  # importing sweep imports ray: the quick checks come first
    from .sweep import Row, Setup


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
    ap.add_argument("--device", choices=list(DEVICES), default=None, help="override every trial's device")
    ap.add_argument("--data-dir", help="dataset cache dir (default: $BPB_DATA_DIR or ~/.cache/bayes-prune-bench)")
    ap.add_argument("--storage-path", help="Ray results + resume states (default: <cwd>/ray_results; shared storage on clusters)")
    ap.add_argument("--dry-run", action="store_true", help="print the expanded trial table and count, train nothing")


@dataclass(frozen=True)
class Runtime:
    """Where and how trials run, built once from the runtime options; paths are absolute (Ray moves
    trials' working directories)."""

    tracking_uri: str
    storage: Path
    address: str | None = None
    cpus_per_trial: float | None = None   # None: 1
    gpus_per_trial: float | None = None   # None: 0.25 when the cluster has a GPU, else 0
    max_concurrent: int | None = None     # None: as resources allow
    device: str | None = None             # overrides every trial's device
    data_dir: str | None = None           # None: the data module's default cache
    dry_run: bool = False

    def __post_init__(self):
        if self.cpus_per_trial is not None and self.cpus_per_trial < 1:
            raise ConfigError(f"--cpus-per-trial={self.cpus_per_trial} is invalid: use a number >= 1.")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise ConfigError(f"--gpus-per-trial={self.gpus_per_trial} is invalid: use a number >= 0 (fractions share a GPU).")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent={self.max_concurrent} is invalid: use an integer >= 1.")
        if self.device is not None and self.device not in DEVICES:
            raise ConfigError(f"--device={self.device} is invalid: use one of {', '.join(DEVICES)}.")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Runtime:
        """From the options add_runtime_options defined; ConfigError names the bad option and the fix."""
        return cls(tracking_uri=preflight.tracking_uri(args.tracking_uri),
                   storage=Path(args.storage_path or "ray_results").resolve(), address=args.address,
                   cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                   max_concurrent=args.max_concurrent, device=args.device,
                   data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None, dry_run=args.dry_run)

    def overrides(self) -> dict:
        """Config fields the runtime options set on every trial."""
        return {**({"device": self.device} if self.device else {}), **({"data_dir": self.data_dir} if self.data_dir else {})}


def runtime_from(ap: argparse.ArgumentParser, args: argparse.Namespace) -> Runtime:
    """The Runtime of parsed options; a bad one is a usage error of the CLI (exit 2)."""
    try:
        return Runtime.from_args(args)
    except ConfigError as e:
        ap.error(str(e))


@dataclass(frozen=True)
class Job:
    """What to run: the grid points and the experiment they belong to. A Job is a grid's run: each
    pending point trains once. Its two other kinds are their own types, each with its own path in
    run_job: ScalingJob (the whole grid once per concurrency level, timed) and SearchJob (recipes
    trained rung by rung and ranked)."""

    trials: tuple[TrialConfig, ...]
    experiment: str
    title: str                                   # progress lines; a search's parent run is named after it
    rerun: bool = False                          # train finished grid points again, from scratch

    def __post_init__(self):
        object.__setattr__(self, "trials", tuple(self.trials))
        if not self.experiment:
            raise ConfigError("the experiment name is empty: pass --experiment NAME.")

    def pending(self, finished: set[str]) -> list[TrialConfig]:
        """The grid points to train, seed-major: an interrupted sweep already holds every method's
        result for the first seeds."""
        todo = self.trials if self.rerun else [t for t in self.trials if t.grid_key() not in finished]
        return sorted(todo, key=lambda t: t.seed)


@dataclass(frozen=True, kw_only=True)
class ScalingJob(Job):
    """Sweep-scaling mode (suite.run --concurrency): the whole grid once per level k, k trials at once
    (k per GPU when trials use GPUs), each level's runs tagged and timed."""

    levels: tuple[int, ...]

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "levels", tuple(self.levels))
        if not self.levels or any(not isinstance(k, int) or k < 1 for k in self.levels):
            raise ConfigError(f"--concurrency={','.join(map(str, self.levels))!r} is invalid: use positive integers "
                              "separated by commas, e.g. 1,2,4.")

    def pending(self, finished: set[str]) -> list[TrialConfig]:
        """Every grid point, seed-major: each level times the whole grid, so nothing counts as already done."""
        return sorted(self.trials, key=lambda t: t.seed)


@dataclass(frozen=True, kw_only=True)
class SearchJob(Job):
    """A recipe search (suite.search): the trials train only, on validation data, and synchronous
    successive halving ranks them by `select` (suite/halving.py); their runs nest under a parent run."""

    select: str                                  # the selection metric
    grace_period: int                            # the first rung: epochs before a trial may be stopped
    tags: Mapping[str, str]                      # on every recipe's run
    parent: Mapping[str, str]                    # on the parent run

    def __post_init__(self):
        super().__post_init__()
        if self.grace_period < 1:
            raise ConfigError(f"grace_period={self.grace_period} is invalid: an integer >= 1.")


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


def drive(rt: Runtime, job: Job, dry_table: Callable[[set[str]], str]) -> Driven | None:
    """Validate everything that can be validated, then create the experiment (and the parent run),
    then train. `rt` has passed check_quick (the CLIs run it before loading the grid, which imports
    torch). Returns None when there was nothing to train (or --dry-run printed dry_table(finished))."""
    if rt.dry_run:
        print(dry_table(grid_keys(read_finished(rt, job.experiment)[2])))
        return None
    with lock(rt, job.experiment):  # before the store is opened; held until the sweep ends
        client, exp, finished = read_finished(rt, job.experiment)
        from . import tracking
        tracking.check_not_deleted(exp, job.experiment)
        return train(rt, job, client, finished)


def train(rt: Runtime, job: Job, client, runs: list) -> Driven | None:
    """The steps after the lock (runs: the experiment's FINISHED runs): finished grid points of an
    older evaluation re-evaluated, pending grid points, compilers and data, Ray, resources, the
    experiment (and a sqlite store, if new: a refused request creates none), the sweep."""
    from . import tracking
    from .sweep import Setup, resume_dir  # sets Ray's environment defaults before ray is imported
    search = isinstance(job, SearchJob)
    finished = grid_keys(runs)
    pending = job.pending(finished)
    done = sum(t.grid_key() in finished for t in job.trials)
    stale = outdated(job, runs)
    print(f"{job.title}: {len(job.trials)} trials, {done} already finished"
          f"{f' ({len(stale)} of an older evaluation: re-evaluated first)' if stale else ''}, {len(pending)} to run"
          f"{' (--rerun)' if job.rerun else ''} -> experiment {job.experiment!r} at {rt.tracking_uri}")
    reevaluate_stale(rt, client, stale)
    if not pending and not search:  # a search still ranks its recipes under its parent run
        exp = client.get_experiment_by_name(job.experiment) if client else None
        if exp is not None:  # a run a dead driver left RUNNING beside finished ones (a retried create)
            reap(client, exp.experiment_id)
        print("nothing to do")
        return None
    check_compilers(rt, pending)
    arrays = load_data(rt, pending, validation_only=search)
    if job.rerun:  # a rerun trains from scratch, not from a leftover resume state
        for t in pending:
            shutil.rmtree(resume_dir(rt.storage, job.experiment, t.grid_key()), ignore_errors=True)
    import ray
    start_ray(rt)
    try:
        res = trial_resources(rt, pending)
        client = client or tracking.connect(rt.tracking_uri)
        exp_id, parent_id = open_experiment(client, job)
        rows = run_job(Setup(client, exp_id, rt.storage, res, arrays), job, pending, parent_id, [] if job.rerun else runs)
    finally:
        ray.shutdown()
    sweeps = len(job.levels) if isinstance(job, ScalingJob) else 1
    return Driven(client, exp_id, rows, len(pending) * sweeps, tracking.browse_hint(rt.tracking_uri, exp_id), parent_id)


def outdated(job: Job, runs: list) -> list:
    """The FINISHED runs of the job's grid points that an older evaluation code evaluated (their tag
    eval_version, read from the runs already listed: nothing is downloaded). Only a grid's run
    re-evaluates: --rerun trains them again anyway, a scaling job times every point afresh, and a
    search's recipes are never evaluated."""
    if job.rerun or isinstance(job, (ScalingJob, SearchJob)):
        return []
    from .reevaluate import needs
    keys = {t.grid_key() for t in job.trials}
    return [r for r in runs if r.data.tags.get("grid_key") in keys and needs(r)]


def reevaluate_stale(rt: Runtime, client, runs: list) -> None:
    """Re-evaluate `runs` from their stored weights, never retraining them; a run without weights is
    reported in one line and stays finished. In-process, before the sweep: it needs no Ray (a grid
    whose points are all finished starts none), its minutes come before the sweep's hours rather
    than after an interruption may cut them off, and the runs it logs to are not being written by
    the sweep's callback at the same time."""
    if not runs:
        return
    from .reevaluate import Where, reevaluate
    skipped = reevaluate(client, runs, Where(rt.device, rt.data_dir, int(rt.cpus_per_trial or 1)))
    print(f"re-evaluated {len(runs) - len(skipped)} finished run(s)"
          f"{f'; {len(skipped)} without the weights to rebuild them stay as they were' if skipped else ''}")


def check_quick(rt: Runtime) -> None:
    """Seconds, before any heavy import: the tracking store (reachable, a sqlite file sound), and unless
    a dry run, that the store's and the storage path's folders take files and the Ray address answers."""
    preflight.check_tracking(rt.tracking_uri)
    preflight.check_store(rt.tracking_uri)
    if rt.dry_run:
        return
    if (db := preflight.sqlite_path(rt.tracking_uri)) is not None:
        preflight.check_writable_folder(db.parent, "--tracking-uri")
    preflight.check_writable_folder(rt.storage, "--storage-path")
    if rt.address:
        preflight.enable_ray_token_auth()  # before ray is imported
        preflight.check_ray_address(rt.address)


def read_finished(rt: Runtime, experiment: str) -> tuple[object, object, list]:
    """(client, experiment or None, its FINISHED runs). A sqlite store that does not exist yet is not
    created here (client None): the driver creates it with the experiment, after every check, and a
    dry run never."""
    from . import tracking
    db = preflight.sqlite_path(rt.tracking_uri)
    client = tracking.connect(rt.tracking_uri) if db is None or db.is_file() else None
    exp = client.get_experiment_by_name(experiment) if client else None
    return client, exp, tracking.runs_by_status(client, exp.experiment_id, "FINISHED") if exp else []


def grid_keys(runs: list) -> set[str]:
    return {r.data.tags.get("grid_key") for r in runs}


@contextmanager
def lock(rt: Runtime, experiment: str) -> Iterator[None]:
    """One driver per experiment in this tracking store, whatever its storage path, and one per
    resume folder (suite/locks.py); a second driver gets the PreflightError naming the first."""
    me = locks.Holder.me(rt.storage)
    with ExitStack() as held:
        held.enter_context(experiment_lock(rt.tracking_uri, experiment, me))
        held.enter_context(locks.file_lock(rt.storage / experiment / ".driver.lock", me,
                                           f"the resume folders of experiment {experiment!r} in {rt.storage}"))
        yield


@contextmanager
def experiment_lock(uri: str, experiment: str, me: locks.Holder) -> Iterator[None]:
    """One writer per experiment in this tracking store (a driver, or python -m suite.evaluate): an
    flock beside a sqlite file, else a lease on the experiment's tag, so the experiment exists from
    here on; a second writer gets the PreflightError naming the first."""
    what = f"experiment {experiment!r} in {uri}"
    if (db := preflight.sqlite_path(uri)) is not None:
        with locks.file_lock(locks.experiment_file(db, experiment), me, what):
            yield
    else:
        from . import tracking
        client = tracking.connect(uri)
        with locks.Lease(client, tracking.ensure_experiment(client, experiment), me, what):
            yield


def check_compilers(rt: Runtime, pending: list[TrialConfig]) -> None:
    """compile=true on CPU needs a C++ compiler here; on a cluster the workers' compilers matter."""
    if rt.address:
        return
    from .trial import check_compiler
    for t in pending:
        check_compiler(t)


def load_data(rt: Runtime, pending: list[TrialConfig], validation_only: bool) -> dict:
    """Every dataset the pending trials use, loaded once (shared via Ray's object store) and before
    Ray starts. A search selects on validation data only (validation_only): its trials never receive
    the test split. Otherwise trials also get their out-of-distribution images, the partner dataset's
    test split (suite.evaluate.ood.PARTNER): a partner no pending trial trains on comes with empty training arrays."""
    from .data import DataError, load_arrays
    from .evaluate.ood import PARTNER
    used = {t.dataset for t in pending}
    ood_only = set() if validation_only else {PARTNER[d] for d in used} - used
    try:
        arrays = {d: load_arrays(d, rt.data_dir) for d in sorted(used | ood_only)}
    except DataError as e:
        raise PreflightError(str(e)) from None
    if validation_only:
        arrays = {d: dataclasses.replace(a, x_test=a.x_test[:0], y_test=a.y_test[:0]) for d, a in arrays.items()}
    for d in ood_only:
        arrays[d] = dataclasses.replace(arrays[d], x_train=arrays[d].x_train[:0], y_train=arrays[d].y_train[:0],
                                        y_test=arrays[d].y_test[:0])
    return arrays


def start_ray(rt: Runtime) -> None:
    """A fresh local Ray instance (address "local": a bare ray.init() would silently attach to
    whatever cluster `ray start` left registered on this machine, possibly a dead one), or the cluster
    at rt.address."""
    import ray
    try:
        ray.init(address=rt.address or "local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        if not rt.address:
            raise
        # the port answered (checked before), so what remains is the cluster refusing us
        raise PreflightError(f"could not join the Ray cluster at {rt.address} ({str(e).splitlines()[0]}): if it "
                             "uses token auth, put its token (`ray get-auth-token` on its head) into ~/.ray/auth_token "
                             "or $RAY_AUTH_TOKEN.") from None


def trial_resources(rt: Runtime, pending: list[TrialConfig]):
    """CPUs / GPUs per trial, checked against the nodes of the cluster Ray is connected to."""
    from .sweep import Resources
    shapes, autoscaler_unknown = preflight.node_shapes()
    has_gpu = any(s.get("GPU", 0) for s in shapes)  # counted on the cluster: a cluster's head usually has none
    gpus = rt.gpus_per_trial if rt.gpus_per_trial is not None else (0.25 if has_gpu else 0.0)
    if not gpus and any(t.device == "cuda" for t in pending):
        raise PreflightError("device=cuda but trials get no GPU: pass --gpus-per-trial > 0 or use --device auto/cpu.")
    res = Resources(cpus=rt.cpus_per_trial or 1.0, gpus=gpus, max_concurrent=rt.max_concurrent)
    try:
        preflight.check_fit(res.cpus, res.gpus, shapes)
    except PreflightError:
        if not autoscaler_unknown:
            raise
        # an autoscaler whose node types this machine cannot see (not a `ray up` head): it may add one
        print(f"no node fits a trial yet (nodes: {preflight.describe(shapes)}); waiting for the autoscaler to add one")
    return res


def open_experiment(client, job: Job) -> tuple[str, str | None]:
    """Only now, after every check: (experiment id, a search's parent run id or None); stale runs reaped."""
    from . import tracking
    exp_id = tracking.ensure_experiment(client, job.experiment)
    reap(client, exp_id)
    parent_id = tracking.parent_run(client, exp_id, job.title, dict(job.parent)) if isinstance(job, SearchJob) else None
    return exp_id, parent_id


def reap(client, exp_id: str) -> None:
    """Runs left RUNNING by a killed driver are marked KILLED (the lock says no live driver owns them)."""
    from . import tracking
    reaped = tracking.reap_stale(client, exp_id)
    if reaped:
        print(f"marked {reaped} run(s) left RUNNING by an interrupted sweep as KILLED")


def run_job(setup: Setup, job: Job, pending: list[TrialConfig], parent_id: str | None, runs: list) -> list[Row]:
    """The sweep itself, one path per kind of job; returns its summary rows. runs: the FINISHED runs
    whose dense nets a grid's trials may start from (none with --rerun)."""
    if not pending:
        return []
    match job:
        case ScalingJob():
            return [row for k in job.levels for row in concurrency_level(setup, job.experiment, pending, k)]
        case SearchJob():
            from .halving import run_search
            return run_search(setup, job, pending, {**job.tags, "mlflow.parentRunId": parent_id})
        case _:  # a grid's run
            return sweep_sharing(setup, pending, job.experiment, runs)


def sweep_sharing(setup: Setup, pending: list[TrialConfig], experiment: str, runs: list) -> list[Row]:
    """A grid's sweep in two waves, so each dense net is trained once (suite/dense.py): the trials
    whose net is in the store or that train it, then the others from the nets the first wave stored."""
    from . import dense
    from .sweep import STATE, resume_dir, run_sweep
    root = dense.dense_dir(setup.storage, experiment)
    dense.clear(root)  # a cache, rebuilt from the store: what an earlier sweep left may be stale
    started = {t.grid_key() for t in pending if (resume_dir(setup.storage, experiment, t.grid_key()) / STATE).is_file()}
    dense_of = {t.grid_key(): t.dense_key() for t in pending}
    keys = Counter(k for k in dense_of.values() if k is not None)
    shared = {k for k, n in keys.items() if n > 1}
    have = {k for k, r in dense.trainers(runs).items() if k in keys and dense.cache(setup.client, r, root)}
    now, after = dense.waves(pending, have, started)
    if shared or have:
        print(f"dense nets: {sum(n for k, n in keys.items() if k in shared | have)} trials share {len(shared | have)} "
              f"({len(have)} in the store); {len(after)} trials wait for the {len(shared - have)} trained first")
    try:
        rows = run_sweep(setup, now, experiment, {})
        if after:
            waiting = {dense_of[t.grid_key()] for t in after}
            wanted = {t.grid_key() for t in now if dense_of[t.grid_key()] in waiting}
            trained = [setup.client.get_run(r.run_id) for r in rows if r.key in wanted and r.status == "FINISHED"]
            for run in dense.trainers(trained).values():
                dense.cache(setup.client, run, root)  # a net whose trainer failed: its trials train it themselves
            rows += run_sweep(setup, after, experiment, {})
    finally:
        dense.clear(root)
    return rows


def concurrency_level(setup: Setup, experiment: str, trials: list[TrialConfig], k: int) -> list[Row]:
    """One timed sweep of all trials with k at once (k per GPU when trials use GPUs)."""
    from .sweep import Resources, run_sweep
    sweep = f"{time.strftime('%Y%m%d-%H%M%S')}-c{k}"
    cpus = setup.res.cpus
    level = Resources(cpus, 1.0 / k, None) if setup.res.gpus > 0 else Resources(cpus, 0.0, k)
    print(f"--- concurrency {k}: sweep {sweep}")
    t0 = time.perf_counter()
    rows = run_sweep(dataclasses.replace(setup, res=level), trials, f"{experiment}-{sweep}",
                     {"sweep": sweep, "concurrency": str(k)})
    wall = time.perf_counter() - t0
    per_hour = sum(r.status == "FINISHED" for r in rows) / wall * 3600
    for r in rows:
        setup.client.log_metric(r.run_id, "sweep_trials_per_hour", per_hour)
        setup.client.log_metric(r.run_id, "sweep_wall_s", wall)
    print(f"--- concurrency {k}: {len(rows)} trials in {wall:.0f} s = {per_hour:.1f} trials/hour")
    return rows
