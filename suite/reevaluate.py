"""Finished runs of an older evaluation version evaluated again from their stored weights, and logged
to the same runs: what `python -m suite.evaluate` does to a store, and suite.run to the grid points it
finds finished.

A run needs it when a trial evaluated it (it has test_acc_<level> metrics; a recipe search's runs
only trained) and its tag eval_version (none: 1) is older than suite.evaluate.EVAL_VERSION, or
always when forced. Only the tags decide, so runs that are up to date cost no download. A run is
rebuilt and evaluated by suite.stored on the tested path; its metrics are logged at step
EVAL_VERSION (tracking.log_evaluation: the newest values win, the earlier ones stay in the history).
A run whose artifacts cannot rebuild its levels is reported in one line and skipped.
"""
from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.exceptions import MlflowException

from . import stored, tracking
from .data import images, load_arrays, make_splits
from .evaluate import EVAL_VERSION
from .evaluate.levels import progress_line
from .evaluate.ood import PARTNER
from .fpmode import flush_denormals
from .trial import resolve_device

EVALUATED = re.compile(r"test_acc_(p\d+|nat)")
NEEDED = ("model.pt", "config.json", "levels")  # artifacts that rebuild the levels (levels/: the retrained ones)


def version(run) -> int:
    """The evaluation version of a run's metrics: its tag eval_version, 1 without it."""
    return int(run.data.tags.get("eval_version", 1))


def evaluated(run) -> bool:
    """Whether a trial evaluated the run (a recipe search's runs train only, a search's parent neither)."""
    return any(EVALUATED.fullmatch(k) for k in run.data.metrics)


def needs(run, force: bool = False) -> bool:
    """Whether a FINISHED run is evaluated again: evaluated by a trial, and by older code unless forced."""
    return evaluated(run) and (force or version(run) < EVAL_VERSION)


@dataclass(frozen=True)
class Where:
    """Where runs are evaluated: device (None: each run's own, as its trial resolved it), the dataset
    folder (None: the run's data_dir, else the data module's default) and torch's CPU threads (the
    trials' --cpus-per-trial: latencies are timed at it)."""

    device: str | None = None
    data_dir: str | None = None
    threads: int = 1


class Reevaluator:
    """Evaluates runs of one store again, one after another; the datasets are loaded once."""

    def __init__(self, client, where: Where):
        self.client, self.where = client, where
        self.arrays: dict[tuple[str, str | None], object] = {}

    def _arrays(self, dataset: str, data_dir: str | None):
        if (dataset, data_dir) not in self.arrays:
            self.arrays[dataset, data_dir] = load_arrays(dataset, data_dir)
        return self.arrays[dataset, data_dir]

    def fetch(self, run) -> stored.Stored | str:
        """The run's model.pt, config.json and levels/ (what exists of them) read by stored.read, or
        why its levels cannot be rebuilt (one line)."""
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as d:
            try:
                there = {a.path for a in self.client.list_artifacts(run_id)}
                for name in NEEDED:
                    if name in there:
                        self.client.download_artifacts(run_id, name, d)
                s = stored.read(Path(d))
            except stored.MissingArtifacts as e:
                return str(e)
            except (OSError, MlflowException) as e:  # an artifact store this machine cannot read
                return f"its artifacts could not be downloaded ({e})"
        overrides = {"device": self.where.device, "data_dir": self.where.data_dir}
        return dataclasses.replace(s, cfg=s.cfg.replace(**{k: v for k, v in overrides.items() if v}))

    def evaluate(self, run_id: str, s: stored.Stored) -> None:
        """Evaluate the run's levels again, a progress line each, and log the metrics to the run."""
        cfg, device = s.cfg, resolve_device(s.cfg.device)
        data = make_splits(self._arrays(cfg.dataset, cfg.data_dir or None), cfg.val_size, cfg.train_subset, cfg.seed, device)
        x_ood = images(self._arrays(PARTNER[cfg.dataset], cfg.data_dir or None).x_test, device)
        metrics, info = stored.evaluate_stored(s, data, x_ood, lambda done: print("  " + progress_line(done), flush=True))
        # the device the metrics were now made on (a trial's tag names its own; Monte Carlo and latency depend on it)
        info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        tracking.log_evaluation(self.client, run_id, metrics, info, EVAL_VERSION)


def reevaluate(client, runs: list, where: Where) -> list:
    """Evaluate `runs` again (FINISHED runs of the store `client` opens), printing a line per run and
    per level; returns the runs skipped. Subnormals are flushed to zero from here on in this process,
    as in the trials that evaluated the runs (suite/fpmode.py)."""
    flush_denormals()
    threads = torch.get_num_threads()
    torch.set_num_threads(where.threads)
    skipped, ev = [], Reevaluator(client, where)
    try:
        for k, run in enumerate(runs):
            name = f"[{k + 1}/{len(runs)}] run {run.info.run_id} ({run.info.run_name}, eval_version {version(run)})"
            try:  # one run that cannot be evaluated (a damaged file, a device this machine lacks) stops no other
                s = ev.fetch(run)
                if not isinstance(s, str):
                    print(f"{name}: evaluating {len(s.cfg.protocol_cls.levels(s.cfg))} levels from its stored weights",
                          flush=True)
                    ev.evaluate(run.info.run_id, s)
                    continue
            except Exception as e:  # reported per run; the pass goes on
                s = f"{type(e).__name__}: {e}"
            print(f"{name}: skipped: {s}", flush=True)
            skipped.append(run)
    finally:
        torch.set_num_threads(threads)
    return skipped
