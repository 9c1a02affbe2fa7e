"""MLflow: one experiment per sweep, one run per grid point, keyed by the grid_key tag.

Only the sweep driver talks to MLflow (see sweep.py for why): workers need no route to the
tracking store, and a sqlite store has exactly one writer, so no metric is lost to locking.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import locks, preflight
from .config import TrialConfig
from .preflight import PreflightError
from .trial import write_artifacts

EPOCH_METRICS = ("train_loss", "train_nll", "train_kl", "val_acc", "lr", "step_time_ms", "epoch_time_s")
BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call
# MLflow 3 tells GenAI from model-training experiments by this experiment tag (values from the UI's
# source: genai_development, custom_model_development); without it the UI opens the GenAI view.
EXPERIMENT_KIND, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def connect(uri: str) -> MlflowClient:
    """A client bound to `uri`; a new sqlite store is created (and migrated) by one process at a time
    (locks.creating). Deliberately not mlflow.set_tracking_uri: that also exports MLFLOW_TRACKING_URI
    to every child process, which would silently redirect their default store."""
    db = preflight.sqlite_path(uri)
    # a server, or a store made before these locks (no lock folder): complete, so opening it creates
    # nothing and needs no lock (a dry run creates no lock folder either)
    if db is None or (db.is_file() and not locks.lock_folder(db).is_dir()):
        return MlflowClient(uri)
    with locks.creating(db):
        return MlflowClient(uri)


def check_not_deleted(exp, name: str) -> None:
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise PreflightError(f"experiment {name!r} is deleted in this store: restore it (mlflow experiments restore) "
                             "or pick another --experiment name.")


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, created if missing; marked as a model-training experiment either way."""
    exp = client.get_experiment_by_name(name)
    check_not_deleted(exp, name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND: TRAINING_KIND})
        except MlflowException:  # a tracking server: another driver created it since we looked (its lock decides)
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(EXPERIMENT_KIND) != TRAINING_KIND:  # made by an older version of the suite
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)
    return exp.experiment_id


def browse_hint(uri: str, exp_id: str) -> str:
    """How to open the experiment in the MLflow UI, in its model-training view."""
    page = f"#/experiments/{exp_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{page}"


def runs_by_status(client: MlflowClient, exp_id: str, status: str) -> list:
    return list(client.search_runs([exp_id], filter_string=f"attributes.status = '{status}'", max_results=50000))


def finished_keys(client: MlflowClient, exp_id: str) -> set[str]:
    return {r.data.tags.get("grid_key") for r in runs_by_status(client, exp_id, "FINISHED")}


def metric_histories(client: MlflowClient, exp_id: str, keys: set[str], metric: str) -> dict[str, dict[int, float]]:
    """grid_key -> {epoch: value} of `metric` for the FINISHED runs of these grid points (the step of
    a per-epoch metric is its epoch)."""
    out = {}
    for r in runs_by_status(client, exp_id, "FINISHED"):
        if (key := r.data.tags.get("grid_key")) in keys:
            out[key] = {m.step: m.value for m in client.get_metric_history(r.info.run_id, metric)}
    return out


def reap_stale(client: MlflowClient, exp_id: str) -> int:
    """Mark runs left RUNNING by a driver that died (SIGKILL, power loss) as KILLED.
    One driver per experiment at a time: a RUNNING run at startup cannot belong to a live sweep."""
    stale = runs_by_status(client, exp_id, "RUNNING")
    for r in stale:
        client.set_terminated(r.info.run_id, "KILLED")
    return len(stale)


def repro_tags() -> dict[str, str]:
    """git commit (+dirty flag) of the code and the versions that produced the numbers."""
    import ray
    import torch

    from . import __version__, build_commit, build_dirty
    dirty = build_dirty()  # the checkout's HEAD, or the commit an installed wheel was built from (setup.py)
    return {"git_commit": build_commit(), "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
            "suite_version": __version__,
            "torch_version": torch.__version__, "ray_version": ray.__version__, "mlflow_version": mlflow.__version__}


def start_run(client: MlflowClient, exp_id: str, cfg: TrialConfig, tags: dict[str, str]) -> str:
    """A RUNNING run with the grid_key tag, identity tags and every TrialConfig field as a param."""
    run = client.create_run(exp_id, run_name=cfg.run_name(),
                            tags={**cfg.run_tags(), **tags, "mlflow.note.content": description(cfg)})
    params = [Param(k, json.dumps(v) if isinstance(v, (list, tuple)) else str(v)) for k, v in cfg.to_dict().items()]
    client.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def description(cfg: TrialConfig) -> str:
    """The run's description in the MLflow UI (markdown): what was trained, and how it differs from
    its method's defaults (the full config is in the params)."""
    default = TrialConfig(method=cfg.method).to_dict()
    changed = [f"`{k}={v}`" for k, v in cfg.to_dict().items()
               if v != default.get(k) and k not in ("method", "dataset", "seed")]
    return (f"**{cfg.label()}** on {cfg.dataset}, seed {cfg.seed} (grid point `{cfg.grid_key()}`).\n\n"
            f"Differs from the defaults: {', '.join(changed) or 'nothing'}. Compare runs on test_acc_p00 / "
            "test_acc_pNN (accuracy after pruning NN %), total_wall_s and epochs_to_fit.")


def parent_run(client: MlflowClient, exp_id: str, name: str, tags: dict[str, str]) -> str:
    """The parent run a search's trial runs nest under (tag mlflow.parentRunId): found again by name
    and the `search_parent` tag when an interrupted search is resumed, created otherwise."""
    for r in client.search_runs([exp_id], filter_string="tags.search_parent = 'true'", max_results=1000):
        if r.info.run_name == name:
            if r.info.status != "RUNNING":
                client.update_run(r.info.run_id, status="RUNNING")
            return r.info.run_id
    run = client.create_run(exp_id, run_name=name, tags={**repro_tags(), **tags, "search_parent": "true",
                                                          "mlflow.note.content": f"Recipe search {name}: {tags}"})
    return run.info.run_id


def finish_parent(client: MlflowClient, run_id: str) -> None:
    client.set_terminated(run_id, "FINISHED")


def log_epochs(client: MlflowClient, run_id: str, epochs: list[dict]) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(e["epoch"])) for e in epochs for k, v in e.items()
               if k in EPOCH_METRICS or k.startswith("val_acc_")]  # val_acc_pNN / _mean: val_sparsities
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH])


def finish_run(client: MlflowClient, run_id: str, metrics: dict[str, float], info: dict[str, str],
               artifact_dir: Path | None) -> None:
    """Final metrics, tags from the trial's info (device, kernels), artifacts; then FINISHED, last,
    so a run never looks finished unless everything above landed."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, metrics=items[i:i + BATCH])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in info.items()])
    if artifact_dir is not None:
        client.log_artifacts(run_id, str(artifact_dir))
    client.set_terminated(run_id, "FINISHED")


def log_evaluation(client: MlflowClient, run_id: str, metrics: dict[str, float], info: dict[str, str],
                   version: int) -> None:
    """A finished run's metrics evaluated again (python -m suite.evaluate) by evaluation code `version`:
    logged at step = version. MLflow's latest value of a metric (what run.data.metrics, the report
    and a runs file read) is its point of greatest (step, timestamp), so the newest version's values
    win over the trial's own (step 0) and every earlier point stays in the metric's history. Then the
    level info as tags, and tag eval_version last: a run cut off before it keeps its older version
    and is evaluated again next time."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, version) for k, v in metrics.items()]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, metrics=items[i:i + BATCH])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in info.items()])
    client.set_tag(run_id, "eval_version", str(version))


def log_result_locally(client: MlflowClient, exp_id: str, result, tags: dict[str, str]) -> str:
    """Log an in-process TrialResult as one finished run (the analysis tests build real stores with it)."""
    run_id = start_run(client, exp_id, result.config, tags)
    log_epochs(client, run_id, result.history)
    with tempfile.TemporaryDirectory() as d:
        write_artifacts(result, Path(d))
        finish_run(client, run_id, result.metrics, result.info, Path(d))
    return run_id
