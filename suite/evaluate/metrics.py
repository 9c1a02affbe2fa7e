"""Evaluation metrics from predicted probabilities, and weight statistics for the plots."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15
WEIGHT_EDGES = np.linspace(-1.0, 1.0, 401)   # weight-value histogram bins (values beyond land in the end bins)
SNR_DB_EDGES = np.linspace(-60.0, 60.0, 481)  # SNR histogram bins in dB: 10 log10(|mu| / sigma)


def classification(probs: Tensor, y: Tensor) -> dict[str, float]:
    """probs [N, C] (rows sum to 1), y [N] -> accuracy, NLL (mean -log p(y)), ECE (15 equal-width bins, L1)."""
    acc = (probs.argmax(-1) == y).float().mean()
    nll = -torch.log(probs.gather(1, y[:, None]).clamp_min(1e-12)).mean()
    ece = multiclass_calibration_error(probs, y, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1")
    return {"acc": float(acc), "nll": float(nll), "ece": float(ece)}


def accuracy(probs_or_logits: Tensor, y: Tensor) -> float:
    return float((probs_or_logits.argmax(-1) == y).float().mean())


def histogram(values: Tensor, edges: np.ndarray) -> np.ndarray:
    """Counts of values in the bins, clipping outliers into the end bins so nothing is lost."""
    v = np.clip(values.detach().cpu().numpy(), edges[0], edges[-1])
    return np.histogram(v, bins=edges)[0]


def snr_db(snr: Tensor) -> Tensor:
    """Signal-to-noise ratio in dB as Blundell et al. plot it: 10 log10(|mu| / sigma)."""
    return 10 * torch.log10(snr.clamp_min(1e-30))


def threshold_db(threshold: float) -> float:
    return 10 * math.log10(max(threshold, 1e-30)) if math.isfinite(threshold) else float("nan")
