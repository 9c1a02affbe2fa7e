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
others, which are counted but not exported) and its recipe-search summary (searches live in their own
experiments, so the file carries the report's table of them). Written with pyarrow (an MLflow
dependency), zstd-compressed, dictionary-encoded; no export time in it, so re-exporting an unchanged
store gives the same data.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
META_KEY = b"bayes_prune_bench.runs"
SCHEMA = pa.schema([("run_id", pa.string()), ("kind", pa.string()), ("key", pa.string()), ("text", pa.string()),
                    ("step", pa.int64()), ("timestamp", pa.int64()), ("value", pa.float64()), ("blob", pa.binary())])
RUN_FIELDS = ("run_name", "status", "start_time", "end_time")   # the keys of `run` rows
HOW = "write one with `python -m suite.analysis.results export --experiment NAME --out PATH`"


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
            "status_counts": export.status_counts, "searches": export.searches}
    table = pa.table(cols, schema=SCHEMA.with_metadata({META_KEY: json.dumps(meta).encode()}))
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def read(path: Path) -> RunsExport:
    """The export in `path`, checked: a Parquet file with this schema version and these columns."""
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
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise FormatError(f"{path} has runs schema version {meta.get('schema_version')!r}; this version of the suite "
                          f"reads version {SCHEMA_VERSION}: export it again with this version from its MLflow store.")
    if schema.names != SCHEMA.names or any(schema.field(n).type != SCHEMA.field(n).type for n in SCHEMA.names):
        raise FormatError(f"{path} says runs schema version {SCHEMA_VERSION} but its columns are "
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
    return RunsExport(meta["experiment"], list(runs.values()), meta.get("experiment_tags", {}),
                      meta.get("status_counts", {}), meta.get("searches", []))
