"""The runs file: an experiment's FINISHED runs as one Parquet table, so results outlive the store.

An MLflow store is a database on one machine; results/<grid>/runs.parquet is a few hundred KB in git.
It holds what the report and `suite.run`'s resume need: per run its name, status, start/end time,
tags (grid_key, label, ...), params, every point of every metric (key, step, timestamp, value: the
final metrics and the per-epoch histories alike) and its small .npz artifacts (the weight and SNR
histograms); never model files. One long table, one row per item:

    run_id     string   the run's id in the store it was exported from
    kind       string   run | tag | param | metric | artifact
    key        string   run: run_name, status, start_time, end_time; tag / param / metric name; artifact file name
    text       string   run_name / status, tag and param values
    step       int64    metric: the step (epoch; 0 for final metrics)
    timestamp  int64    metric: ms since the epoch; run: start_time / end_time
    value      float64  metric: the value
    blob       binary   artifact: the file's bytes

Rows keep the order the store listed them in (runs, then tags, params and metric keys of a run), so
a report built from the file equals one built from the store. The file's metadata (key META_KEY,
JSON) holds `schema_version`, the experiment's name and tags, its runs by status (FINISHED and the
others, which are counted but not exported), its recipe-search summary (searches live in their own
experiments, so the file carries the report's table of them) and, from version 2, `runs`: per run in
file order its run_id, run_name, counts (metric_points, params, tags, artifacts) and `sha256`, the
digest of its content (`digest`). Written with pyarrow (an MLflow dependency), zstd-compressed,
dictionary-encoded; no export time in it, so re-exporting an unchanged store gives the same data.

A valid Parquet file can still be damaged (rows dropped by a tool, a bad merge): `read` checks every
run against the metadata before returning any, so a damaged file is refused whole, naming the run,
and never enters a store or a report. Version 1 files (the committed results) carry no per-run
counts; of them only the FINISHED count of `status_counts` is checked against the runs present.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .files import replacing

SCHEMA_VERSION = 2
READABLE = (1, 2)   # version 1: no per-run counts or digests (the committed results/ files)
META_KEY = b"bayes_prune_bench.runs"
SCHEMA = pa.schema([("run_id", pa.string()), ("kind", pa.string()), ("key", pa.string()), ("text", pa.string()),
                    ("step", pa.int64()), ("timestamp", pa.int64()), ("value", pa.float64()), ("blob", pa.binary())])
RUN_FIELDS = ("run_name", "status", "start_time", "end_time")   # the keys of `run` rows
HOW = "write one with `python -m suite.analysis.results export --experiment NAME --out PATH`"
DAMAGED = "the file is damaged; export it again"
COUNTS = {"metric_points": "metric points", "params": "params", "tags": "tags", "artifacts": "artifacts"}


class FormatError(ValueError):
    """The file is not a runs export this version can read; the message names the fix."""


@dataclass
class RunRecord:
    """One run as the store holds it."""

    run_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, int, int, float]] = field(default_factory=list)  # (key, step, timestamp, value), all points
    artifacts: dict[str, bytes] = field(default_factory=dict)

    def latest(self) -> dict[str, float]:
        """Each metric's latest point, by MLflow's rule: the greatest (step, timestamp, value)."""
        best: dict[str, tuple[int, int, float]] = {}
        for key, step, ts, value in self.metrics:
            if key not in best or (step, ts, value) > best[key]:
                best[key] = (step, ts, value)
        return {k: v for k, (_, _, v) in best.items()}

    def history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of every point of one metric, in the store's order."""
        return [(step, value) for k, step, _, value in self.metrics if k == key]

    def counts(self) -> dict[str, int]:
        return {"metric_points": len(self.metrics), "params": len(self.params), "tags": len(self.tags),
                "artifacts": len(self.artifacts)}

    def digest(self) -> str:
        """sha256 of the run's canonical serialisation: compact JSON with sorted keys of its name, status,
        times, tags and params, its metric points in order (histories are read in it) and each
        artifact's sha256. A row lost, changed or added anywhere in the run changes it."""
        content = {"run_name": self.run_name, "status": self.status, "start_time": self.start_time,
                   "end_time": self.end_time, "tags": self.tags, "params": self.params, "metrics": self.metrics,
                   "artifacts": {k: hashlib.sha256(v).hexdigest() for k, v in self.artifacts.items()}}
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class RunsExport:
    """An experiment's FINISHED runs and what the report says about the rest of its store."""

    experiment: str
    runs: list[RunRecord]
    experiment_tags: dict[str, str] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)
    searches: list[dict] = field(default_factory=list)   # rows of load.searches() at export time


def write(export: RunsExport, path: Path) -> Path:
    """Write the file atomically (a half-written file never replaces a good one)."""
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}

    def row(run_id, kind, key, text=None, step=None, timestamp=None, value=None, blob=None):
        for name, v in zip(SCHEMA.names, (run_id, kind, key, text, step, timestamp, value, blob)):
            cols[name].append(v)
    for r in export.runs:
        row(r.run_id, "run", "run_name", text=r.run_name)
        row(r.run_id, "run", "status", text=r.status)
        row(r.run_id, "run", "start_time", timestamp=r.start_time)
        row(r.run_id, "run", "end_time", timestamp=r.end_time)
        for k, v in r.tags.items():
            row(r.run_id, "tag", k, text=v)
        for k, v in r.params.items():
            row(r.run_id, "param", k, text=v)
        for k, step, ts, value in r.metrics:
            row(r.run_id, "metric", k, step=step, timestamp=ts, value=value)
        for name, data in r.artifacts.items():
            row(r.run_id, "artifact", name, blob=data)
    meta = {"schema_version": SCHEMA_VERSION, "experiment": export.experiment, "experiment_tags": export.experiment_tags,
            "status_counts": export.status_counts, "searches": export.searches,
            "runs": [{"run_id": r.run_id, "run_name": r.run_name, **r.counts(), "sha256": r.digest()} for r in export.runs]}
    table = pa.table(cols, schema=SCHEMA.with_metadata({META_KEY: json.dumps(meta).encode()}))
    with replacing(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read(path: Path) -> RunsExport:
    """The export in `path`, checked: a Parquet file of a readable schema version with these columns,
    every run as its metadata describes it (`verify`)."""
    if not path.is_file():
        raise FormatError(f"no runs file {str(path)!r}: give the path of an export ({HOW}).")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{path} is not a Parquet file ({e}); {HOW}.") from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise FormatError(f"{path} is a Parquet file but not a runs export (no {META_KEY.decode()!r} metadata); {HOW}.")
    meta = json.loads(raw)
    version = meta.get("schema_version")
    if version not in READABLE:
        raise FormatError(f"{path} has runs schema version {version!r}; this version of the suite reads versions "
                          f"{', '.join(map(str, READABLE))}: export it again with this version from its MLflow store.")
    if schema.names != SCHEMA.names or any(schema.field(n).type != SCHEMA.field(n).type for n in SCHEMA.names):
        raise FormatError(f"{path} says runs schema version {version} but its columns are "
                          f"{', '.join(f'{f.name}:{f.type}' for f in schema)}; expected "
                          f"{', '.join(f'{f.name}:{f.type}' for f in SCHEMA)}. {HOW[0].upper() + HOW[1:]}.")
    runs: dict[str, RunRecord] = {}
    for run_id, kind, key, text, step, ts, value, blob in zip(*pq.read_table(path).to_pydict().values()):
        r = runs.setdefault(run_id, RunRecord(run_id, "", "", None, None))
        if kind == "run" and key in RUN_FIELDS:
            setattr(r, key, text if key in ("run_name", "status") else ts)
        elif kind == "tag":
            r.tags[key] = text
        elif kind == "param":
            r.params[key] = text
        elif kind == "metric":
            r.metrics.append((key, step, ts, value))
        elif kind == "artifact":
            r.artifacts[key] = blob
        else:
            raise FormatError(f"{path}: unknown row {kind}/{key} (run {run_id}); {HOW}.")
    export = RunsExport(meta["experiment"], list(runs.values()), meta.get("experiment_tags", {}),
                        meta.get("status_counts", {}), meta.get("searches", []))
    verify(export, meta.get("runs"), path)
    return export


def verify(export: RunsExport, listed: list[dict] | None, path: Path) -> None:
    """Every run `listed` in the metadata (version 2; None for version 1) is in the file with its counts and
    digest, no other run is, and the FINISHED runs are as many as `status_counts` says. Raises FormatError
    naming the first run that differs."""
    present = {r.run_id: r for r in export.runs}
    for entry in listed or []:
        where = f"run {entry['run_name']} ({entry['run_id']}) in {path}"
        r = present.pop(entry["run_id"], None)
        if r is None:
            raise FormatError(f"{where} is missing, its export lists it: {DAMAGED}.")
        for key, n in r.counts().items():
            if n != entry[key]:
                raise FormatError(f"{where} has {n} {COUNTS[key]}, its export says {entry[key]}: {DAMAGED}.")
        if r.digest() != entry["sha256"]:
            raise FormatError(f"{where} differs from its export (sha256 of its content): {DAMAGED}.")
    if listed is not None and present:
        raise FormatError(f"{path} holds rows of runs its export does not list ({', '.join(present)}): {DAMAGED}.")
    finished, said = sum(r.status == "FINISHED" for r in export.runs), export.status_counts.get("FINISHED", 0)
    if finished != said:
        raise FormatError(f"{path} holds {finished} FINISHED runs, its export says {said}: {DAMAGED}.")
