"""`python -m suite.analysis.results`: an experiment's FINISHED runs into a runs file, and back into a store.

    python -m suite.analysis.results export --experiment paper [--tracking-uri URI] --out results/paper/runs.parquet
    python -m suite.analysis.results import results/paper/runs.parquet --experiment paper [--tracking-uri URI]
    python -m suite.analysis.results import --from-uri sqlite:///other.db [--from-experiment E] --experiment paper

The file format is runsfile.py's. Import merges: a grid point (its `grid_key` tag, with the `sweep`
tag that tells a concurrency sweep's repeats apart; a run without a grid_key, such as a search's
parent run, by its name) that already has a FINISHED run in the target experiment is skipped and
reported, and of several FINISHED runs of one point in the file only the latest is taken (the
report's rule), so importing twice adds nothing and `suite.run` counts the imported points as
finished. An imported run keeps its name, tags, params, every metric point (step, timestamp,
value), its histogram artifacts and its start and end times; its run id is new (a child's
`mlflow.parentRunId` follows its parent when the parent is in the file too).

Import is all or nothing, and repairs what an earlier one left: the file is verified whole
(runsfile.read) before anything is written, so a damaged file adds nothing. Each run is created
RUNNING with the tag `import_incomplete`, set FINISHED last and then untagged, so a killed import
leaves runs that say so. The next import of the file deletes and imports again every run that is
the same run as one of the file's (import keeps a run's name and start time) and is tagged, not
FINISHED, or holds fewer params, artifacts or metric points than the file (an older version
imported a damaged file), and reports each.

Built on MlflowClient (search_runs, get_metric_history, create_run, log_batch, set_terminated), not
on mlflow-export-import: that tool copies each run as a folder of JSON plus every artifact (model
files too) and knows nothing of grid keys, so it would neither keep results small enough for git
nor skip the points a store already has; the client keeps every field that matters here with no
dependency beyond MLflow (which brings pyarrow, the file's writer).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ..preflight import PreflightError, check_store, check_tracking, check_writable_folder, open_store, tracking_uri
from . import runsfile
from .load import AnalysisError, finished_runs, searches
from .runsfile import RunRecord, RunsExport

PARENT = "mlflow.parentRunId"
IMPORTING = "import_incomplete"   # on a run while it is being imported; removed once it is FINISHED
# MLflow's log_batch limits per call: 1000 metrics, 100 params, 100 tags
METRIC_BATCH, PARAM_BATCH, TAG_BATCH = 1000, 100, 100


def identity(tags: dict[str, str], run_name: str) -> tuple[str, ...]:
    key = tags.get("grid_key")
    return ("grid_key", key, tags.get("sweep", "")) if key else ("run_name", run_name)


def from_store(client: MlflowClient, name: str) -> RunsExport:
    """The experiment's FINISHED runs with every metric point and their .npz artifacts (not model files)."""
    exp, runs, counts = finished_runs(client, name, "this store")
    records = []
    for r in runs:
        rid = r.info.run_id
        points = [(k, h.step, h.timestamp, h.value) for k in r.data.metrics for h in client.get_metric_history(rid, k)]
        arts = {}
        with tempfile.TemporaryDirectory() as d:
            for a in client.list_artifacts(rid):
                if not a.is_dir and a.path.endswith(".npz"):
                    arts[a.path] = Path(client.download_artifacts(rid, a.path, d)).read_bytes()
        records.append(RunRecord(rid, r.info.run_name or "", r.info.status, r.info.start_time, r.info.end_time,
                                 dict(r.data.tags), dict(r.data.params), points, arts))
    if not records:
        raise AnalysisError(f"experiment {name!r} has no FINISHED runs to export (runs by status: {counts or 'none'}).")
    found = searches(client, {r.tags.get("method") for r in records} - {None})
    rows = json.loads(json.dumps(found.to_dict("records"), default=lambda v: v.item()))  # numpy scalars -> JSON
    return RunsExport(name, records, dict(exp.tags), counts, rows)


def to_store(export: RunsExport, client: MlflowClient, name: str) -> tuple[int, list[str], list[str]]:
    """Log the file's runs into experiment `name` (created with the exported experiment's tags if
    missing); returns how many were imported, one line per run skipped and one per run repaired."""
    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise AnalysisError(f"experiment {name!r} is deleted in the target store: restore it (mlflow experiments "
                            "restore) or import into another --experiment.")
    exp_id = exp.experiment_id if exp else client.create_experiment(name, tags=export.experiment_tags)
    latest: dict[tuple, RunRecord] = {}
    skipped = []
    for r in sorted((r for r in export.runs if r.status == "FINISHED"), key=lambda r: r.end_time or 0):
        if (old := latest.get(identity(r.tags, r.run_name))) is not None:
            skipped.append(f"{_name(old)}: an older FINISHED run of the same grid point in the file")
        latest[identity(r.tags, r.run_name)] = r
    same = {(r.run_name, r.start_time): r for r in latest.values()}
    have: dict[tuple, str] = {}
    earlier: set[str] = set()   # store runs that are whole earlier imports of the file's runs
    broken: list[tuple[RunRecord, str]] = []
    for run in client.search_runs([exp_id], max_results=50000):
        r = same.get((run.info.run_name, run.info.start_time))
        if r is not None and (why := _incomplete(client, run, r)):
            client.delete_run(run.info.run_id)
            broken.append((r, why))
        elif run.info.status == "FINISHED":
            have[identity(run.data.tags, run.info.run_name or "")] = run.info.run_id
            earlier |= {run.info.run_id} if r is not None else set()
    new_ids: dict[str, str] = {}
    fresh: set[str] = set()
    for r in sorted(latest.values(), key=lambda r: PARENT in r.tags):  # parents first, for their children's tag
        if (done := have.get(identity(r.tags, r.run_name))) is not None:
            new_ids[r.run_id] = done
            skipped.append(f"{_name(r)}: already FINISHED in experiment {name!r}")
            if done in earlier and r.tags.get(PARENT) in fresh:   # its parent was repaired: a new id to follow
                client.set_tag(done, PARENT, new_ids[r.tags[PARENT]])
            continue
        new_ids[r.run_id] = _log(client, exp_id, r, new_ids)
        fresh.add(r.run_id)
    repaired = [f"{_name(r)}: {why}; " + ("deleted: the store has its own FINISHED run of the point"
                                         if identity(r.tags, r.run_name) in have else "imported again")
                for r, why in broken]
    return len(fresh), skipped, repaired


def _incomplete(client: MlflowClient, run, r: RunRecord) -> str:
    """Why `run` in the store, the same run as the file's `r`, is an incomplete import of it; "" if it is whole.
    The counts are read back (about 0.2 s per run on sqlite), because a run an older version imported from a
    damaged file is FINISHED and carries no mark."""
    if IMPORTING in run.data.tags or run.info.status != "FINISHED":
        return f"left {run.info.status} by an interrupted import"
    rid = run.info.run_id
    held = {"params": len(run.data.params),
            "artifacts": sum(a.path.endswith(".npz") for a in client.list_artifacts(rid)),
            # the store keeps one of identical points
            "metric points": sum(len(client.get_metric_history(rid, k)) for k in run.data.metrics)}
    want = {"params": len(r.params), "artifacts": len(r.artifacts), "metric points": len(set(r.metrics))}
    short = [f"{held[k]} of its {want[k]} {k}" for k in want if held[k] < want[k]]
    return f"imported partially ({', '.join(short)})" if short else ""


def _name(r: RunRecord) -> str:
    return f"{r.tags.get('grid_key') or '-'} ({r.run_name})"


def _log(client: MlflowClient, exp_id: str, r: RunRecord, new_ids: dict[str, str]) -> str:
    tags = dict(r.tags)
    if PARENT in tags:
        parent = new_ids.get(tags.pop(PARENT))
        tags |= {PARENT: parent} if parent else {}   # a parent outside the file: no dangling pointer
    run_id = client.create_run(exp_id, start_time=r.start_time, tags={IMPORTING: "true"},
                               run_name=r.run_name or None).info.run_id
    params = [Param(k, v) for k, v in r.params.items()]
    tag_items = [RunTag(k, v) for k, v in tags.items()]
    metrics = [Metric(k, value, ts, step) for k, step, ts, value in r.metrics]
    for items, n, kw in ((params, PARAM_BATCH, "params"), (tag_items, TAG_BATCH, "tags"), (metrics, METRIC_BATCH, "metrics")):
        for i in range(0, len(items), n):
            client.log_batch(run_id, **{kw: items[i:i + n]})
    if r.artifacts:
        with tempfile.TemporaryDirectory() as d:
            for fname, data in r.artifacts.items():
                (Path(d) / fname).write_bytes(data)
            client.log_artifacts(run_id, d)
    # FINISHED first, then the tag goes: killed between the two, the run still says it was being imported
    client.set_terminated(run_id, "FINISHED", end_time=r.end_time)
    client.delete_tag(run_id, IMPORTING)
    return run_id


def out_path(out: str) -> Path:
    """The file to write: not a folder, in a folder that exists and takes files. An existing file is
    replaced, whole, once the export has succeeded: re-exporting is how results/<grid>/runs.parquet is updated."""
    path = Path(out)
    if path.is_dir():
        raise AnalysisError(f"--out {out} is a folder: give a file path, e.g. {path / 'runs.parquet'}.")
    check_writable_folder(path.parent, "--out")
    if not path.parent.is_dir():
        raise AnalysisError(f"--out {out}: the folder {path.parent} does not exist: create it (mkdir -p {path.parent}) "
                            "or fix the path.")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.analysis.results", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write an experiment's FINISHED runs to a runs file")
    ex.add_argument("--experiment", required=True, help="MLflow experiment name")
    ex.add_argument("--out", required=True, help="the file to write, e.g. results/NAME/runs.parquet (its folder must exist)")
    im = sub.add_parser("import", help="merge a runs file (or another store's experiment) into a store")
    im.add_argument("file", nargs="?", help="a runs file; or give --from-uri")
    im.add_argument("--experiment", required=True, help="the target experiment (created if missing)")
    im.add_argument("--from-uri", default=None, help="import from this MLflow store instead of a file")
    im.add_argument("--from-experiment", default=None, help="the experiment in --from-uri (default: --experiment)")
    for p in (ex, im):
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)")
    args = ap.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    if args.command == "import" and (args.file is None) == (args.from_uri is None):
        im.error("give either a runs file or --from-uri, not both or neither")
    try:
        if args.command == "export":
            client = open_store(uri)
            path = out_path(args.out)
            export = from_store(client, args.experiment)
            runsfile.write(export, path)
            points = sum(len(r.metrics) for r in export.runs)
            print(f"wrote {path}: {len(export.runs)} FINISHED runs of {args.experiment!r}, {points} metric points, "
                  f"{sum(len(r.artifacts) for r in export.runs)} artifacts, {path.stat().st_size / 1024:.0f} KiB")
            return 0
        # the target is checked first but opened only once the file is verified: MLflow creates a missing store
        check_tracking(uri)
        check_store(uri)
        export = (runsfile.read(Path(args.file)) if args.file else
                  from_store(open_store(args.from_uri), args.from_experiment or args.experiment))
        imported, skipped, repaired = to_store(export, MlflowClient(uri), args.experiment)
    except (AnalysisError, PreflightError, runsfile.FormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in repaired:
        print(f"repaired {line}")
    for line in skipped:
        print(f"skipped {line}")
    print(f"imported {imported} runs into experiment {args.experiment!r} at {uri}; skipped {len(skipped)}"
          + (f"; repaired {len(repaired)}" if repaired else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
