"""A dense net is trained once per recipe, seed and dataset: the protocols of one such point (SGD's
one-shot, fine-tune, iterative and gradual arms) prune the same trained net, so all but one start
from it instead of training it again.

The net is content-addressed by TrialConfig.dense_key (the grid key of the trial's one-shot twin at
level 0). Its home is the MLflow store: every run keeps model.pt (the trained, unpruned weights) and
history.json (the epochs of training proper), and is tagged dense_key. On the storage path,
<storage>/<experiment>/dense/<dense_key>.pt is only a cache the driver writes from a finished run
before the trials that start from it, so a lost storage path or a driver started elsewhere costs a
download, never a wrong start. A trial that starts from it is a trial resumed after its last training
epoch (run_trial's resume path): the numbers of every level are bit for bit those of a trial that
trained the net itself (tests/test_dense.py), grid keys do not change, and its run is tagged
dense_from = the run that trained the net.

A grid's sweep runs in two waves: the trials whose net exists or that train it (one per dense key:
the one with its own resume state, else the cheapest protocol, which finishes first), then the
others, once that net is in the store. --rerun ignores nets of earlier runs. Searches and scaling
sweeps train every trial (a search trains recipes that differ; a scaling sweep times whole trials).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import TrialConfig

HISTORY = "history.json"   # run artifact: the epoch records of training proper, exact (JSON keeps float64)


def dense_dir(storage: str | Path, experiment: str) -> Path:
    return Path(storage) / experiment / "dense"


def start_state(cfg: TrialConfig, root: Path) -> dict | None:
    """The resume state of a trial starting from the cached dense net of its key, or None: the
    trained weights and the training epochs, no optimiser (no protocol that shares a net uses the
    training optimiser after training), no retraining progress."""
    key = cfg.dense_key()
    path = root / f"{key}.pt" if key else None
    if path is None or not path.is_file():
        return None
    net = torch.load(path, weights_only=True, map_location="cpu")
    return {"grid_key": cfg.grid_key(), "model": net["model"], "history": net["history"], "finetune": {},
            "dense": {"from": net["run_id"], "epochs": len(net["history"])}}


def trainers(runs: list) -> dict[str, object]:
    """dense_key -> a FINISHED run holding that net (one that trained it where there is one)."""
    out: dict[str, object] = {}
    for r in runs:
        key = r.data.tags.get("dense_key")
        if key and (key not in out or "dense_from" in out[key].data.tags):
            out[key] = r
    return out


def cache(client, run, root: Path) -> bool:
    """Write the net of `run` (its model.pt and history.json) to the cache; False if the run lacks them."""
    key = run.data.tags["dense_key"]
    with tempfile.TemporaryDirectory() as d:
        try:
            model = torch.load(client.download_artifacts(run.info.run_id, "model.pt", d), weights_only=True)
            history = json.loads(Path(client.download_artifacts(run.info.run_id, HISTORY, d)).read_text())
        except Exception as e:  # an artifact missing (a run older than history.json) or unreadable
            print(f"dense net {key[:8]}: run {run.info.run_id} holds no usable net ({type(e).__name__}); trained again")
            return False
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.{os.getpid()}.tmp"
    trained_by = run.data.tags.get("dense_from", run.info.run_id)
    torch.save({"dense_key": key, "run_id": trained_by, "model": model, "history": history}, tmp)
    os.replace(tmp, root / f"{key}.pt")
    return True


def waves(pending: list[TrialConfig], have: set[str], started: set[str]) -> tuple[list[TrialConfig], list[TrialConfig]]:
    """Split the pending trials, in their order: (now, after). have: dense keys whose net is cached;
    started: grid keys with a resume state of their own (they go on from it). Per dense key without a
    net, one trainer goes now (a started one, else the one training fewest epochs after its net) and
    the rest after. Each trial's keys are computed once: a grid may hold 10,000 trials."""
    keyed = [(t, t.dense_key(), t.grid_key() in started) for t in pending]
    busy = {key for _, key, own in keyed if own}  # a started trial trains its key's net
    now, groups = [], {}
    for t, key, own in keyed:
        if key is None or key in have or own:
            now.append(t)
        else:
            groups.setdefault(key, []).append(t)
    for key, ts in groups.items():
        if key not in busy:
            now.append(min(ts, key=lambda t: t.total_epochs))
    first = {id(t) for t in now}
    return [t for t in pending if id(t) in first], [t for t in pending if id(t) not in first]


def clear(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
