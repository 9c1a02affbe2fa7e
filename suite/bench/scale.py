"""`python -m suite.bench.scale`: what one trial costs the parts a large run shares (the driver, the
MLflow store, the storage path), measured for docs/scale.md's extrapolation to thousands of trials.

--store DB ...: per FINISHED run of an MLflow sqlite store (pass a copy of a live store): params, tags,
  metric keys, metric rows (history points), artifact bytes, epochs and total_wall_s; the file's bytes per
  run and per row of each table; the seconds the driver's start-up read of finished grid points takes.
--storage DIR ...: bytes per trial folder of a --storage-path (Ray's checkpoints), per resume state,
  and of Tune's experiment state per trial.
--trials N: N tiny trials through the real driver steps (suite.driver, one trial at a time) into a
  temporary store, once per --epochs value and --repeat times: the sweep's wall time, the sum of the
  trials' own total_wall_s, (wall - sum) / N = the serial cost per trial outside the trials (driver and
  Ray), the driver process's CPU seconds per trial, the seconds spent in each MLflow call, and the bytes
  per trial of Tune's experiment state at the end.
Every record carries the load average: on a busy machine times grow, counts and bytes do not.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

# the smallest trial the real driver runs: its own work is small, so what is left of the sweep's wall
# time is the per-trial cost of the driver and Ray
TINY = dict(method="sgd", hidden=(8,), train_subset=200, val_size=200, sparsities=(0.0,), compile=False)
CALLS = ("start_run", "log_epochs", "finish_run")  # the driver's MLflow work (suite/tracking.py)
TRIAL_DIR = re.compile(r"^[0-9a-f]{16}_")         # Tune's trial folders: <grid_key>_<trial id>


def spread(values) -> dict:
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def store_report(db: Path) -> dict:
    """Counts and bytes per FINISHED run of an MLflow sqlite store."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        finished = con.execute("SELECT run_uuid, artifact_uri FROM runs WHERE status = 'FINISHED'").fetchall()

        def count(sql: str, run: str) -> int:
            return con.execute(sql, (run,)).fetchone()[0]
        per = {k: [] for k in ("params", "tags", "metric_keys", "metric_rows", "artifact_bytes", "epochs", "total_wall_s")}
        for run, uri in finished:
            per["params"].append(count("SELECT count(*) FROM params WHERE run_uuid = ?", run))
            per["tags"].append(count("SELECT count(*) FROM tags WHERE run_uuid = ?", run))
            per["metric_keys"].append(count("SELECT count(DISTINCT key) FROM metrics WHERE run_uuid = ?", run))
            per["metric_rows"].append(count("SELECT count(*) FROM metrics WHERE run_uuid = ?", run))
            per["artifact_bytes"].append(folder_bytes(Path(uri.removeprefix("file://"))))
            per["epochs"].append(int(con.execute("SELECT value FROM params WHERE run_uuid = ? AND key = 'epochs'",
                                                 (run,)).fetchone()[0]))
            per["total_wall_s"].append(con.execute("SELECT value FROM latest_metrics WHERE run_uuid = ? AND "
                                                   "key = 'total_wall_s'", (run,)).fetchone()[0])
        row_bytes = bytes_per_row(con, ("metrics", "latest_metrics", "params", "tags"))
    finally:
        con.close()
    if not finished:
        raise SystemExit(f"error: {db} holds no FINISHED run: pass a store of a sweep that finished some trials.")
    size = db.stat().st_size
    return {"store": str(db), "runs": runs, "finished": len(finished), "file_bytes": size,
            "startup_read_s_per_finished_run": startup_read_s(db) / len(finished),
            "file_bytes_per_run": size / runs, "bytes_per_row": row_bytes,
            "per_finished_run": {k: spread(v) for k, v in per.items()}}


def bytes_per_row(con: sqlite3.Connection, tables) -> dict[str, float] | None:
    """Bytes of each table's pages and its indexes' pages, per row (None where sqlite lacks dbstat)."""
    try:
        pages = dict(con.execute("SELECT m.tbl_name, sum(d.pgsize) FROM dbstat d JOIN sqlite_master m "
                                 "ON m.name = d.name GROUP BY m.tbl_name").fetchall())
    except sqlite3.OperationalError:
        return None
    rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    return {t: pages.get(t, 0) / n for t, n in rows.items() if n}


def empty_store_bytes() -> int:
    """The bytes of a fresh sqlite store (MLflow's schema, no run): what a store's size does not owe its runs."""
    from ..tracking import connect
    with tempfile.TemporaryDirectory() as d:
        connect(f"sqlite:///{d}/mlflow.db").search_experiments()  # creates the schema
        return (Path(d) / "mlflow.db").stat().st_size


def startup_read_s(db: Path) -> float:
    """Seconds the driver's first step spends reading which grid points are finished (every
    experiment's FINISHED runs, as tracking.finished_keys does), through MLflow on a read-only copy."""
    from ..tracking import connect, finished_keys
    client = connect(f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    t0 = time.perf_counter()
    for e in exps:
        finished_keys(client, e)
    return time.perf_counter() - t0


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def storage_report(root: Path) -> dict:
    """Bytes per Tune trial folder under a storage path, finished (its checkpoint holds the run's
    artifacts, model.pt among them) or not (no checkpoint yet; or, from code that checkpointed every
    epoch, training states), and per resume state."""
    folders = [d for d in root.glob("*/*") if d.is_dir() and TRIAL_DIR.match(d.name)]
    unfinished = {d for d in folders if not any(d.glob("checkpoint_*/model.pt"))}
    sizes = {"finished_trial_folder_bytes": [folder_bytes(d) for d in folders if d not in unfinished],
             "unfinished_trial_folder_bytes": [folder_bytes(d) for d in unfinished],
             "resume_state_bytes": [f.stat().st_size for f in root.glob("*/resume/*/state.pt")]}
    # Tune's experiment state (every trial's last result, metric statistics, checkpoint records) is
    # held by the driver and rewritten whole at every snapshot: its bytes per trial scale with the grid
    sizes["experiment_state_bytes_per_trial"] = [
        max(f.stat().st_size for f in d.glob("experiment_state-*.json")) / n for d in root.iterdir()
        if any(d.glob("experiment_state-*.json")) and (n := sum(1 for t in d.iterdir() if TRIAL_DIR.match(t.name)))]
    return {"storage": str(root), "total_bytes": folder_bytes(root),
            **{k: spread(v) if v else None for k, v in sizes.items()}}


def overhead(wall: float, trial_walls: list[float]) -> float:
    """The sweep's wall time not spent inside a trial, per trial (trials run one at a time)."""
    return (wall - sum(trial_walls)) / len(trial_walls)


def per_epoch(cost: dict[int, float]) -> float:
    """The extra per-trial cost of one more logged epoch, from the costs at the fewest and most epochs."""
    lo, hi = min(cost), max(cost)
    if lo == hi:
        raise ValueError("per-epoch cost needs two different epoch counts, e.g. --epochs 1,5")
    return (cost[hi] - cost[lo]) / (hi - lo)


@contextlib.contextmanager
def timing(module, names):
    """Wrap module.<name> for each name so that calls through the module add to {name: [calls, seconds]}."""
    spent, originals = {n: [0, 0.0] for n in names}, {n: getattr(module, n) for n in names}

    def timed(name, fn):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name][0] += 1
                spent[name][1] += time.perf_counter() - t0
        return call
    for n, fn in originals.items():
        setattr(module, n, timed(n, fn))
    try:
        yield spent
    finally:
        for n, fn in originals.items():
            setattr(module, n, fn)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # this process, all its threads: the driver and Tune's loop
    return r.ru_utime + r.ru_stime


def driver_sweep(n: int, epochs: int, root: Path) -> dict:
    """n tiny trials through the driver's own steps (data, Ray, resources, experiment, sweep), timed
    around the sweep alone, so Ray's start-up is not charged to the trials."""
    import ray

    from .. import driver, tracking
    from ..config import TrialConfig
    from ..sweep import Setup
    trials = [TrialConfig(**TINY, epochs=epochs, seed=s) for s in range(n)]
    rt = driver.Runtime(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", storage=root / "ray_results", max_concurrent=1)
    job = driver.Job(trials, f"scale-e{epochs}", f"scale bench, {epochs} epoch(s)")
    client = tracking.connect(rt.tracking_uri)
    arrays = driver.load_data(rt, trials, validation_only=False)
    driver.start_ray(rt)
    try:
        res = driver.trial_resources(rt, trials)
        exp_id, _ = driver.open_experiment(client, job)
        setup = Setup(client, exp_id, rt.storage, res, arrays)
        with timing(tracking, CALLS) as spent:
            load0, cpu0, t0 = load(), cpu_s(), time.perf_counter()
            rows = driver.run_job(setup, job, trials, None, [])
            wall, cpu, load1 = time.perf_counter() - t0, cpu_s() - cpu0, load()
    finally:
        ray.shutdown()
    bad = [r.name for r in rows if r.status != "FINISHED"]
    if bad or len(rows) != n:
        raise SystemExit(f"error: {len(bad)} of {n} bench trials did not finish ({bad[:3]}): see the log above.")
    walls = [r.wall_s for r in rows]
    state = storage_report(rt.storage)["experiment_state_bytes_per_trial"]
    return {"trials": n, "epochs": epochs, "load": [load0, load1], "wall_s": wall, "trial_wall_s_sum": sum(walls),
            "overhead_s_per_trial": overhead(wall, walls), "driver_cpu_s_per_trial": cpu / n,
            "experiment_state_bytes_per_trial": state and state["median"],
            "mlflow_s": {k: {"calls": c, "seconds": s} for k, (c, s) in spent.items()}}


def driver_report(n: int, epoch_counts: list[int], repeat: int) -> dict:
    """driver_sweep for every epoch count, `repeat` rounds interleaved; medians per epoch count and the
    per-epoch cost from them."""
    sweeps = []
    for _ in range(repeat):
        for e in epoch_counts:
            with tempfile.TemporaryDirectory(prefix="bpb-scale-") as d:
                sweeps.append(driver_sweep(n, e, Path(d)))
    out = {"sweeps": sweeps}
    for k in ("overhead_s_per_trial", "driver_cpu_s_per_trial"):
        med = {e: statistics.median(s[k] for s in sweeps if s["epochs"] == e) for e in epoch_counts}
        out[f"{k}_median"] = med
        if len(med) > 1:
            out[k.replace("per_trial", "per_logged_epoch")] = per_epoch(med)
    return out


def epoch_list(value: str) -> list[int]:
    try:
        out = sorted({int(v) for v in value.split(",")})
    except ValueError:
        out = []
    if not out or out[0] < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give epoch counts >= 1 separated by commas, e.g. 1,5")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.bench.scale", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--store", type=Path, nargs="+", metavar="DB", help="MLflow sqlite files (copies) to count")
    mode.add_argument("--storage", type=Path, nargs="+", metavar="DIR", help="storage paths (--storage-path) to size")
    mode.add_argument("--trials", type=int, metavar="N", help="time N tiny trials through the driver")
    ap.add_argument("--epochs", type=epoch_list, default=[1, 5], help="epoch counts of the tiny trials (default 1,5)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of every epoch count (default 2)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    if args.trials is not None and (args.trials < 1 or args.repeat < 1):
        ap.error("--trials and --repeat must be >= 1")
    missing = [p for p in (args.store or args.storage or []) if not p.exists()]
    if missing:
        ap.error(f"{missing[0]} does not exist")
    if args.store:
        report = {"load": load(), "empty_store_bytes": empty_store_bytes(), "stores": [store_report(p) for p in args.store]}
    elif args.storage:
        report = {"load": load(), "storage": [storage_report(p) for p in args.storage]}
    else:
        report = driver_report(args.trials, args.epochs, args.repeat)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
