"""A finished trial's levels evaluated again from what its run stored, with the current evaluation code.

Every model a trial evaluated can be rebuilt exactly from its artifacts: model.pt (the trained,
unpruned state dict) and config.json give the trained model; a level the protocol retrains is its
levels/pNN.npz (prune.held_model), any other level (oneshot, natural, level 0) a pruned copy at the
protocol's mask (Protocol.mask, from the trained model's score, as the trial made it). Each is
evaluated by evaluate.levels.LevelEvaluator, the trial's own path, so on the same device the metrics
equal the trial's (latencies aside). The protocol's own metrics from retraining (oneshot_*_pNN,
finetune_val_acc_pNN, model_epochs_pNN) are not recomputed: they stay as the trial logged them.
No MLflow here: suite.reevaluate reads runs from a store and logs what this returns.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import methods, prune
from .config import ConfigError, TrialConfig, from_dict
from .data import Splits
from .evaluate.level import weight_std
from .evaluate.levels import LevelEvaluator, OnLevel, validation
from .methods import Method
from .protocols.base import Protocol


class MissingArtifacts(ValueError):
    """A run lacks an artifact its levels need (an imported run carries no weights, an older run no
    levels/pNN.npz); the message names it."""


@dataclass(frozen=True)
class Stored:
    """What a run stored of its trained model: its config, model.pt's state dict and, per level tag
    it retrained, the arrays of levels/<tag>.npz (prune.held_state's); read() checks that every
    level the protocol retrains is there."""

    cfg: TrialConfig
    state_dict: Mapping[str, torch.Tensor]
    kept: Mapping[str, Mapping[str, np.ndarray]]


def read(folder: Path, levels: list[float | str] | None = None) -> Stored:
    """A run's artifacts as downloaded into `folder` (model.pt, config.json, levels/*.npz); raises
    MissingArtifacts naming what `levels` (default: every level of its protocol) need and it lacks."""
    missing = [n for n in ("model.pt", "config.json") if not (folder / n).is_file()]
    if missing:
        raise MissingArtifacts(f"no {' / '.join(missing)} artifact (a run imported from a runs file carries no weights)")
    try:
        cfg = from_dict(json.loads((folder / "config.json").read_text()), where="config.json")
    except ConfigError as e:
        raise MissingArtifacts(f"{e} (a plug-in method or protocol: set $BPB_PLUGINS as when the run was made)") from e
    kept = {}
    for path in sorted((folder / "levels").glob("*.npz")):
        with np.load(path) as z:
            kept[path.stem] = {k: z[k] for k in z.files}
    levels = cfg.protocol_cls.levels(cfg) if levels is None else levels
    missing = [prune.level_tag(p) for p in levels if cfg.protocol_cls.retrains(p) and prune.level_tag(p) not in kept]
    if missing:
        raise MissingArtifacts(f"no levels/{', levels/'.join(t + '.npz' for t in missing)} artifact (logged before "
                               "retrained levels were kept): rerun the grid point to evaluate it again")
    return Stored(cfg, torch.load(folder / "model.pt", map_location="cpu", weights_only=True), kept)


def protocol(run: Stored, device: torch.device | str = "cpu") -> Protocol:
    """The run's protocol over its trained model (model.pt on `device`, in eval mode), ready for
    model_at; data is None: nothing is retrained."""
    model = methods.build(run.cfg)
    model.load_state_dict(run.state_dict)
    return run.cfg.protocol_cls(run.cfg, model.to(device).eval(), None, {})


def model_at(proto: Protocol, run: Stored, level: float | str) -> Method:
    """The model the trial evaluated at `level`: a retrained level's stored weights
    (prune.held_model), any other level a pruned copy at the protocol's mask."""
    if proto.retrains(level):
        return prune.held_model(proto.model, run.kept[prune.level_tag(level)]).eval()
    return prune.pruned_copy(proto.model, proto.mask(level)[0]).eval()


@torch.no_grad()
def evaluate_stored(run: Stored, data: Splits, x_ood: torch.Tensor | None,
                    on_level: OnLevel | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Every level of run.cfg's protocol rebuilt from `run` and evaluated as the trial evaluated it:
    on the test split of `data` (make_splits of the run's dataset and config) and x_ood (the partner
    dataset's test images, [M, 784]), on data's device. Returns (metrics, info): every level's
    metrics and weight_std, named as the trial logs them, and the level info (latency kernels)."""
    cfg, proto = run.cfg, protocol(run, data.x_test.device)
    levels = proto.levels(cfg)
    evaluator = LevelEvaluator(cfg, levels, data.x_test, data.y_test, x_ood, on_level, validation(cfg, data))
    out, info = {}, {}
    for i, p in enumerate(levels):
        started = time.perf_counter()
        level, level_info = evaluator.evaluate(i, model_at(proto, run, p), started)
        out.update(level)
        info.update(level_info)
    out["weight_std"] = weight_std(proto.model)
    return out, info
