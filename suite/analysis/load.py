"""MLflow runs, or a runs file exported from them -> tidy pandas DataFrames. Read-only; imports
nothing from the training code.

Two sources behind one interface (`Experiment.source`): an MLflow store (`load`), read on demand,
and a runs file (`load_file`, see runsfile.py), read at once; the report cannot tell them apart.
What a run *is* (its label, whether it is the study's baseline, its pruning protocol) comes from its
tags (the run-tag contract in ARCHITECTURE.md); the order and colour of its label from labels.py, which
knows the built-in labels and otherwise takes the run's `label_order` and `color` tags. Every
TrialConfig field is a param; they are kept as `param.<name>` columns so like-for-like checks can
compare any of them.
"""
from __future__ import annotations

import io
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from . import budget, labels, runsfile

# a per-level metric: <name>_pNN (fixed fraction pruned) or <name>_nat (the sparsity a method chose itself)
LEVEL = re.compile(r"^(?P<metric>.+)_(?P<level>p\d{2,3}|nat)$")
NAT = "nat"
DATASET_NAMES = {"mnist": "MNIST", "fmnist": "Fashion-MNIST"}   # display names, and the order datasets are shown in
EPOCH_METRICS = ("train_loss", "train_nll", "train_kl", "val_acc", "epoch_time_s")
IDENTITY_TAGS = ("grid_key", "label", "method", "dataset", "git_commit", "device", "pruner", "sweep", "concurrency",
                 "protocol", "label_order", "color", "baseline")

# Documented fallback for stores written before the run-tag contract: their runs carry no `protocol` or
# `baseline` tag; they were one-shot, and SGD was the baseline (their labels, SGD, Dropout p and BBB, are
# built-in ones, so labels.py orders and colours them).
LEGACY_BASELINE = "SGD"

# OOD and rotation-shift metrics are reported from runs evaluated at this version or later (run tag
# eval_version; a run without it is version 1) and dropped from older runs as they load, so no
# section, table or quote sees them: up to version 1 they were measured on the first 2000 test images,
# a biased subset of MNIST's (a Sparse VD net's AUROC: 0.873 there, 0.905 on all 10k).
PROBES_SINCE = 2
# The newest evaluation version checked against PROBES_SINCE. A test keeps it equal to
# suite.evaluate.EVAL_VERSION (the analysis imports no training code), so a bump there asks whether
# the figures of the versions before still stand. 3 added the bits and compression metrics only; 4
# changed the compacted latency (the faster of two reads; footprint.GATHER_SINCE notes the older runs).
CHECKED_EVAL_VERSION = 4
PROBE_METRICS = ("ood_", "shift_")


class AnalysisError(ValueError):
    """The experiment cannot be analysed (missing, empty); the message says what exists instead."""


class StoreSource:
    """Per-epoch histories, artifacts and recipe searches, read from an MLflow store when asked for."""

    def __init__(self, client: MlflowClient):
        self.client = client

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return [(h.step, h.value) for h in self.client.get_metric_history(run_id, metric)]

    def artifact(self, run_id: str, name: str) -> bytes | None:
        if name not in {a.path for a in self.client.list_artifacts(run_id)}:
            return None
        with tempfile.TemporaryDirectory() as d:
            return Path(self.client.download_artifacts(run_id, name, d)).read_bytes()

    def searches(self, methods: set[str]) -> pd.DataFrame:
        return searches(self.client, methods)


class FileSource:
    """The same from a runs file: histories and artifacts are in it; the searches as summarised at export."""

    def __init__(self, export: runsfile.RunsExport):
        self.runs = {r.run_id: r for r in export.runs}
        self.found = pd.DataFrame(export.searches)

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return self.runs[run_id].history(metric)

    def artifact(self, run_id: str, name: str) -> bytes | None:
        return self.runs[run_id].artifacts.get(name)

    def searches(self, methods: set[str]) -> pd.DataFrame:
        return self.found


@dataclass
class Experiment:
    """The FINISHED runs of one experiment (one per grid_key) and what else the store holds."""

    name: str
    runs: pd.DataFrame          # one row per grid point: tags, `param.*`, final metrics, run_id
    status_counts: dict[str, int]
    duplicates_dropped: int
    source: StoreSource | FileSource


def _row(run_id: str, end_time: int | None, tags: dict[str, str], p: dict[str, str], metrics: dict[str, float]) -> dict:
    t = dict(tags)
    if "protocol" not in t:  # a run from before the tag contract (see LEGACY_BASELINE)
        t["protocol"] = "oneshot"
        t.setdefault("baseline", str(t.get("label") == LEGACY_BASELINE).lower())
    order, color = labels.style(t.get("label"), t.get("label_order"), t.get("color"))
    version = int(t.get("eval_version", 1))
    kept = metrics if version >= PROBES_SINCE else {k: v for k, v in metrics.items() if not k.startswith(PROBE_METRICS)}
    row = {"run_id": run_id, "end_time": end_time, **{k: t.get(k) for k in IDENTITY_TAGS}}
    row.update(sweep=t.get("sweep", ""), protocol=t.get("protocol") or "oneshot",
               dropout=float(t.get("dropout", 0)), seed=int(t.get("seed", 0)), label_order=order, color=color,
               baseline=str(t.get("baseline", "")).lower() == "true",
               hidden=p.get("hidden"), epochs=int(p.get("epochs", 0)),
               # tag collapsed=true: training ended at chance accuracy; its numbers are marked, never read as results
               collapsed=str(t.get("collapsed", "")).lower() == "true",
               eval_version=version, probes_dropped=len(kept) < len(metrics),
               total_epochs=budget.total_epochs(t.get("protocol") or "oneshot", p, kept))
    row.update({f"param.{k}": v for k, v in p.items()})
    row.update(kept)
    return row


def _experiment(name: str, rows: list[dict], counts: dict[str, int], source: StoreSource | FileSource) -> Experiment:
    df = pd.DataFrame(rows)
    if df.empty:
        raise AnalysisError(f"experiment {name!r} has no FINISHED runs yet (runs by status: {counts or 'none'}).")
    # an accident upstream (--rerun, two drivers) must not double-count: the latest FINISHED run of a
    # grid point wins. Runs of a concurrency sweep (tag `sweep`) are separate measurements by design.
    n = len(df)
    df = df.sort_values("end_time").drop_duplicates(["grid_key", "sweep"], keep="last").reset_index(drop=True)
    return Experiment(name, df, counts, n - len(df), source)


def finished_runs(client: MlflowClient, experiment: str, where: str):
    """(the experiment, its FINISHED runs, every run counted by status); an unknown or deleted
    experiment is an error naming the ones the store has."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise AnalysisError(f"no experiment {experiment!r} in {where}; it has: {', '.join(names) or 'none'}.")
    runs = client.search_runs([exp.experiment_id], max_results=50000)
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.info.status] = counts.get(r.info.status, 0) + 1
    return exp, [r for r in runs if r.info.status == "FINISHED"], counts


def load(experiment: str, tracking_uri: str) -> Experiment:
    client = MlflowClient(tracking_uri)
    _, runs, counts = finished_runs(client, experiment, tracking_uri)
    rows = [_row(r.info.run_id, r.info.end_time, r.data.tags, r.data.params, r.data.metrics) for r in runs]
    return _experiment(experiment, rows, counts, StoreSource(client))


def load_file(path: Path) -> Experiment:
    """An experiment from a runs file (`python -m suite.analysis.results export`)."""
    try:
        export = runsfile.read(Path(path))
    except runsfile.FormatError as e:
        raise AnalysisError(str(e)) from None
    rows = [_row(r.run_id, r.end_time, r.tags, r.params, r.latest()) for r in export.runs if r.status == "FINISHED"]
    return _experiment(export.experiment, rows, export.status_counts, FileSource(export))


def ordered_labels(df: pd.DataFrame) -> list[str]:
    """Labels by their order (labels.py, else the `label_order` tag; ties alphabetically), then labels without one,
    alphabetically."""
    order = df.groupby("label")["label_order"].min()
    return sorted(order.index, key=lambda lab: (np.isnan(order[lab]), 0 if np.isnan(order[lab]) else order[lab], lab))


def ordered_datasets(df: pd.DataFrame) -> list[str]:
    """Datasets in DATASET_NAMES order (MNIST first), others after, alphabetically."""
    known = list(DATASET_NAMES)
    return sorted(df.dataset.unique(), key=lambda d: (known.index(d) if d in known else len(known), d))


def baseline_label(df: pd.DataFrame) -> str | None:
    """The label whose runs carry `baseline=true` (the comparison's reference); None if no run says so."""
    labels = [lab for lab in ordered_labels(df) if df.loc[df.label == lab, "baseline"].any()]
    return labels[0] if labels else None


def bayesian(df: pd.DataFrame, label: str) -> bool:
    """Is the label's method Bayesian: does its objective hold a KL term to a prior (Method.has_kl, so its runs log
    train_kl)? BBB, Sparse VD, L0 and Bayesian Compression are; SGD and Dropout (a point estimate) are not."""
    return "train_kl" in df and bool(df.loc[df.label == label, "train_kl"].notna().any())


def level_key(level: str) -> float:
    """Sort key of a level name: p00 < p50 < p99 < nat."""
    return np.inf if level == NAT else int(level[1:])


IN_FEATURES, CLASSES = 784, 10  # both datasets are 28 x 28 grey images of 10 classes


def layer_sizes(hidden: str) -> list[int]:
    """Weights per linear layer of 784-hidden...-10, from the `hidden` param (a JSON list)."""
    dims = [IN_FEATURES, *json.loads(hidden), CLASSES]
    return [a * b for a, b in zip(dims, dims[1:])]


def weights_left(run: pd.Series, level: str) -> tuple[float, bool]:
    """(fraction of weights left, biases not counted; exact?) of one run at one level (pNN or nat), in
    the point-estimate net the accuracy is measured on: flops_nonzero / flops_dense where logged
    (suite.evaluate.compact counts 2 FLOPs per weight). Older runs: the per-layer `sparsity_l{i}_<level>`
    weighted by layer size, else the overall `sparsity_<level>`, which counts biases when the run
    pruned them (exact False). Both are measured on one weight sample: the point estimate's zeros for
    every method but L0, whose sampled gates close more weights (up to 16 points in results/lenet/)."""
    flops = run.get(f"flops_nonzero_{level}", np.nan) / run.get(f"flops_dense_{level}", np.nan)
    if not np.isnan(flops):
        return float(flops), True
    sizes = layer_sizes(run["hidden"])
    per_layer = [run.get(f"sparsity_l{i}_{level}", np.nan) for i in range(1, len(sizes) + 1)]
    if not np.isnan(per_layer).any():
        return float(np.dot(sizes, 1 - np.asarray(per_layer)) / sum(sizes)), True
    biases = str(run.get("param.prune_biases", "False")).lower() == "true"
    return 1 - float(run.get(f"sparsity_{level}", np.nan)), not biases


def by_level(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long format of a per-level metric: one row per run and level. `level` is pNN or nat; `sparsity`
    is the nominal fraction for pNN and, for nat, the fraction of weights the run's natural level
    removed (weights_left); for metric 'sparsity' itself the measured values are kept."""
    cols = {c: m["level"] for c in df.columns if (m := LEVEL.match(c)) and m["metric"] == metric}
    keep = ["run_id", "label", "dataset", "seed"]
    if not cols:
        return pd.DataFrame(columns=[*keep, "level", "sparsity", metric])
    long = df.melt(id_vars=keep, value_vars=list(cols), var_name="col", value_name=metric).dropna(subset=[metric])
    long["level"] = long["col"].map(cols)
    if metric != "sparsity":
        nominal = long["level"].map(lambda lv: np.nan if lv == NAT else int(lv[1:]) / 100)
        runs = df.set_index("run_id")
        nat = {r: 1 - weights_left(runs.loc[r], NAT)[0] for r in long.loc[long["level"] == NAT, "run_id"].unique()}
        long["sparsity"] = nominal.where(long["level"] != NAT, long["run_id"].map(nat))
    return long.drop(columns="col")


def history(exp: Experiment) -> pd.DataFrame:
    """Per-epoch metrics of every run: run_id, label, dataset, seed, epoch, metric, value."""
    rows = []
    for r in exp.runs.itertuples():
        for m in EPOCH_METRICS:
            for step, value in exp.source.history(r.run_id, m):
                rows.append({"run_id": r.run_id, "label": r.label, "dataset": r.dataset, "seed": r.seed,
                             "epoch": step, "metric": m, "value": value})
    return pd.DataFrame(rows, columns=["run_id", "label", "dataset", "seed", "epoch", "metric", "value"])


def npz_artifact(exp: Experiment, run_id: str, name: str) -> dict[str, np.ndarray] | None:
    """A run's .npz artifact as arrays, or None if the run has none of that name."""
    data = exp.source.artifact(run_id, name)
    if data is None:
        return None
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


def searches(client: MlflowClient, methods: set[str]) -> pd.DataFrame:
    """One row per recipe search in the store (`suite.search` parent runs) of one of `methods`: its
    budget, selection metric, what it trained (recipes, epochs, stopped early), its wall time (first
    recipe's start to last recipe's end: a resumed search's includes the pause; re-exporting adds
    nothing) and its trial time (recipe runs' durations summed: CPU-hours at one core per trial)."""
    rows = []
    for e in client.search_experiments():
        parents = [r for r in client.search_runs([e.experiment_id], filter_string="tags.search_parent = 'true'")
                   if r.data.tags.get("method") in methods]
        runs = client.search_runs([e.experiment_id], max_results=50000) if parents else []  # once per search experiment
        for parent in parents:
            t = parent.data.tags
            kids = [r for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.info.status == "FINISHED"]
            max_epochs = int(t.get("budget_max_epochs", 0))
            epochs = [int(r.data.metrics.get("stopped_at_epoch", max_epochs)) for r in kids]
            spans = [(r.info.start_time, r.info.end_time) for r in kids if r.info.end_time]
            metric = t.get("select", "")
            rows.append({"search": t.get("search"), "method": t["method"], "status": parent.info.status,
                         "samples": int(t.get("budget_samples", 0)), "max_epochs": max_epochs,
                         "grace_period": int(t.get("budget_grace_period", 0)), "select": metric,
                         "recipes_finished": len(kids), "trained_full": sum(ep == max_epochs for ep in epochs),
                         "epochs_trained": sum(epochs),
                         "wall_h": (max(e for _, e in spans) - min(b for b, _ in spans)) / 3.6e6 if spans else np.nan,
                         "trial_h": sum(e - b for b, e in spans) / 3.6e6,
                         "best": parent.data.metrics.get(f"best_{metric}", np.nan), "best_run_id": t.get("best_run_id", "")})
    return pd.DataFrame(rows)
