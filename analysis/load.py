"""MLflow runs -> tidy pandas DataFrames. Read-only; imports nothing from the training code."""
from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

METHOD_ORDER = ["SGD", "Dropout 0.5", "Dropout 0.75", "Dropout 0.9", "BBB"]
LEVEL = re.compile(r"^(?P<metric>.+)_p(?P<level>\d{2,3})$")
EPOCH_METRICS = ("train_loss", "train_nll", "train_kl", "val_acc", "epoch_time_s")


class AnalysisError(ValueError):
    """The experiment cannot be analysed (missing, empty); the message says what exists instead."""


@dataclass
class Experiment:
    """The FINISHED runs of one experiment (one per grid_key) and what else the store holds."""

    name: str
    runs: pd.DataFrame          # one row per grid point: tags, params, final metrics, run_id
    status_counts: dict[str, int]
    duplicates_dropped: int
    client: MlflowClient


def method_order(labels) -> list[str]:
    """SGD, Dropout by p, BBB first in that order, anything else after, alphabetically."""
    known = [m for m in METHOD_ORDER if m in set(labels)]
    return known + sorted(set(labels) - set(known))


def load(experiment: str, tracking_uri: str) -> Experiment:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise AnalysisError(f"no experiment {experiment!r} in {tracking_uri}; it has: {', '.join(names) or 'none'}.")
    runs = client.search_runs([exp.experiment_id], max_results=50000)
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.info.status] = counts.get(r.info.status, 0) + 1
    rows = []
    for r in runs:
        if r.info.status != "FINISHED":
            continue
        t, p = r.data.tags, r.data.params
        rows.append({"run_id": r.info.run_id, "end_time": r.info.end_time, "grid_key": t.get("grid_key"),
                     "label": t.get("label"), "method": t.get("method"), "dataset": t.get("dataset"),
                     "dropout": float(t.get("dropout", 0)), "seed": int(t.get("seed", 0)),
                     "hidden": p.get("hidden"), "epochs": int(p.get("epochs", 0)), "git_commit": t.get("git_commit"),
                     "device": t.get("device"), "pruner": t.get("pruner"), "sweep": t.get("sweep", ""),
                     "concurrency": t.get("concurrency"), **r.data.metrics})
    df = pd.DataFrame(rows)
    if df.empty:
        raise AnalysisError(f"experiment {experiment!r} has no FINISHED runs yet (runs by status: {counts or 'none'}).")
    # an accident upstream (--rerun, two drivers) must not double-count: the latest FINISHED run of a
    # grid point wins. Runs of a concurrency sweep (tag `sweep`) are separate measurements by design.
    n = len(df)
    df = df.sort_values("end_time").drop_duplicates(["grid_key", "sweep"], keep="last").reset_index(drop=True)
    return Experiment(experiment, df, counts, n - len(df), client)


def by_level(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long format of a per-sparsity metric: one row per run and level (sparsity as a fraction)."""
    cols = {c: int(LEVEL.match(c)["level"]) / 100 for c in df.columns
            if LEVEL.match(c) and LEVEL.match(c)["metric"] == metric}
    if not cols:
        return pd.DataFrame(columns=["run_id", "label", "dataset", "seed", "sparsity", metric])
    long = df.melt(id_vars=["run_id", "label", "dataset", "seed"], value_vars=list(cols), var_name="col",
                   value_name=metric).dropna(subset=[metric])
    long["sparsity"] = long["col"].map(cols)
    return long.drop(columns="col")


def history(exp: Experiment) -> pd.DataFrame:
    """Per-epoch metrics of every run: run_id, label, dataset, seed, epoch, metric, value."""
    rows = []
    for r in exp.runs.itertuples():
        for m in EPOCH_METRICS:
            for h in exp.client.get_metric_history(r.run_id, m):
                rows.append({"run_id": r.run_id, "label": r.label, "dataset": r.dataset, "seed": r.seed,
                             "epoch": h.step, "metric": m, "value": h.value})
    return pd.DataFrame(rows, columns=["run_id", "label", "dataset", "seed", "epoch", "metric", "value"])


def npz_artifact(exp: Experiment, run_id: str, name: str) -> dict[str, np.ndarray] | None:
    """A run's .npz artifact as arrays, or None if the run has none of that name."""
    if name not in {a.path for a in exp.client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as d:
        path = exp.client.download_artifacts(run_id, name, d)
        with np.load(io.BytesIO(Path(path).read_bytes())) as z:
            return {k: z[k] for k in z.files}
