"""One pruning level's metrics, for a model already at its level: at the end of a trial (the protocol
made the model) or from stored weights (suite.stored rebuilds the model; levels.py runs the levels).

Metric names are the MLflow contract (docs/mlflow.md); a level's metrics end in its tag
(prune.level_tag: p90, nat). Every level is evaluated after torch.manual_seed(level_seed(seed, i)),
i its position among the trial's levels, so its Monte Carlo numbers depend neither on how training
used the RNG nor on how many timed repetitions the previous level's latency phase ran, and the same
weights give the same metrics at the end of training and from storage.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .. import prune
from ..methods import Method
from ..train import epoch_seed
from . import bits, compact, latency, metrics, ood

if TYPE_CHECKING:  # config imports the protocols, which import this package's metrics
    from ..config import TrialConfig

# OOD detection and the rotation shift use the full test splits: every test image against every image
# of the partner's test split (10k each, so AUPR's chance level is 0.5), and every test image at every
# angle, rotated once per trial (188 MB of float32 for MNIST's 10k). Up to EVAL_VERSION 1 they used the
# first 2000, which are not a random sample of MNIST's test split (a Sparse VD net's AUROC against
# Fashion-MNIST: 0.873 on them, 0.905 on all 10k). Full sets add 3.2 s to a LeNet-300-100 SGD trial's
# evaluation (+67 %) and 8.0 s to Sparse VD's (+41 %), but only 2.2 % and 0.9 % to the whole trial, and
# carry no sampling error, so no sample stands in for them (docs/performance.md). The shift uses the
# point prediction only: an ensemble at every angle would multiply its cost by test_samples. Per-angle
# shift metrics are logged at two levels only, the least and the most pruned (the curves a reader
# compares), the means at every level: ~40 shift metrics per trial of ~10 levels instead of ~200.
@dataclass(frozen=True)
class Probes:
    """What every level is evaluated on besides the test split, built once per trial (probes())."""

    x_ood: Tensor | None          # [M, 784] out-of-distribution inputs (all of them), or None: no OOD metrics
    rotated: dict[float, Tensor]  # angle -> every test image rotated by it
    y_rotated: Tensor             # their labels


def probes(x: Tensor, y: Tensor, x_ood: Tensor | None) -> Probes:
    """The probes of a test split x, y [N, 784], [N] and of out-of-distribution inputs (or None): all of them."""
    return Probes(x_ood, ood.rotations(x), y)


def level_seed(seed: int, i: int) -> int:
    """The RNG seed of level number i of a trial with `seed` (its own stream, apart from training's)."""
    return epoch_seed(seed, 10_000 + i)


def curve_levels(levels: Iterable[float | str]) -> set[float]:
    """The levels whose shift is logged per angle: the least and the most pruned (see Probes' comment)."""
    numeric = [p for p in levels if not isinstance(p, str)]
    return {min(numeric), max(numeric)} if numeric else set()


@torch.no_grad()
def evaluate_level(m: Method, cfg: TrialConfig, x: Tensor, y: Tensor, tag: str, probe: Probes,
                   shift_curve: bool = True, val: tuple[Tensor, Tensor] | None = None
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """One pruned model: accuracy, NLL, ECE (and their Monte Carlo ensemble versions), sparsity as
    the forward pass sees it (overall and per layer), out-of-distribution detection (scores of every
    test image against every image of probe.x_ood), accuracy / NLL / ECE under rotation (per angle if
    shift_curve, their means always), latency, size and compaction (compact.py), compression after
    pruning and after precision reduction (bits.py; val: the validation split a point-estimate
    method's precision is chosen on, None when there is none apart from the test split).
    Returns (metrics, info)."""
    m.eval()
    probs = m.predict(x)
    out = {f"test_{k}_{tag}": v for k, v in metrics.classification(probs, y).items()}
    # stochastic methods: measured on a *sampled* forward, zero only if a pruned weight's noise is 0 too
    sparsity, per_layer = prune.measured_sparsity(m, x[:100], cfg.prune_biases, m.sample())
    out[f"sparsity_{tag}"] = sparsity
    out.update({f"sparsity_l{j + 1}_{tag}": s for j, s in enumerate(per_layer)})
    samples = samples_ood = None
    if m.has_mc:  # one Monte Carlo ensemble: its mean is predict_mc (same draws), its spread scores OOD inputs
        inputs = [x] if probe.x_ood is None else [x, probe.x_ood]
        samples, *rest = ood.mc_samples_on(m, inputs, cfg.test_samples)
        samples_ood = rest[0] if rest else None
        out.update({f"test_{k}_mc_{tag}": v for k, v in metrics.classification(samples.mean(0), y).items()})
    if probe.x_ood is not None:
        out.update(ood.detection(probs, m.predict(probe.x_ood), tag, samples, samples_ood))
    out.update(ood.shift(m.predict, probe.rotated, probe.y_rotated, tag, per_angle=shift_curve))
    shape, small = compact.measure(m, tag)
    lat, info = latency.measure(m, x, tag, cfg.test_samples if m.has_mc else 0, others={"compact": small.readers()})
    compression, bits_info = bits.measure(m, small, x, y, val, tag)
    return {**out, **lat, **shape, **compression}, {**info, **bits_info}


def _weights(model: Method) -> Tensor:
    """The point weights of every weight matrix (biases left out), flat."""
    return torch.cat([model.point_weights()[s.start:s.end] for s in model.layout if not s.is_bias])


@torch.no_grad()
def weight_std(model: Method) -> float:
    """Standard deviation of the trained model's point weights (metric weight_std)."""
    return float(_weights(model).std())


@torch.no_grad()
def histograms(model: Method, cfg: TrialConfig, thresholds: list[float]) -> dict[str, dict[str, np.ndarray]]:
    """The trained model's histogram artifacts, npz name -> arrays: weights_hist.npz (point weights),
    and snr_hist.npz for methods with an SNR score; thresholds: the score threshold of every numeric
    level (prune.keep_mask), drawn over the histograms by the plots."""
    out = {"weights_hist.npz": {
        "edges": metrics.WEIGHT_EDGES, "counts": metrics.histogram(_weights(model), metrics.WEIGHT_EDGES),
        "sparsities": np.array(cfg.sparsities), "score_thresholds": np.array(thresholds)}}
    if "snr" in model.scores:
        snr = torch.cat([model.score("snr")[s.start:s.end] for s in model.layout if not s.is_bias])
        out["snr_hist.npz"] = {
            "edges_db": metrics.SNR_DB_EDGES, "counts": metrics.histogram(metrics.snr_db(snr), metrics.SNR_DB_EDGES),
            "sparsities": np.array(cfg.sparsities),
            "thresholds_db": np.array([metrics.threshold_db(t) if cfg.resolved_pruner == "snr" else np.nan
                                       for t in thresholds])}
    return out
