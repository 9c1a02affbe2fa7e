"""Uncertainty under pruning: out-of-distribution detection and accuracy under rotation shift.

Detection (Hendrycks and Gimpel 2017): a score per input, higher = more likely out-of-distribution;
OOD inputs are the positive class. AUROC is the Mann-Whitney statistic, the probability that a random
OOD input scores above a random in-distribution one, ties counted 1/2 (ranks averaged over ties);
AUPR is average precision, sum_k (R_k - R_{k-1}) P_k over the distinct score thresholds, highest
first, with no interpolation (scikit-learn's average_precision_score, the tests' second implementation).
Scores: predictive entropy H[p] in nats. For a Monte Carlo ensemble of S softmax outputs, the total
entropy H[mean_s p_s] splits into the expected entropy mean_s H[p_s] (aleatoric) and the mutual
information between prediction and weights, total - expected (epistemic; Depeweg et al. 2018,
Smith and Gal 2018). A trial scores its whole test split against the partner dataset's whole test split
(PARTNER; suite.evaluate.level.probes): a subset is not a random sample unless drawn as one.

Shift (Ovadia et al. 2019, "Can you trust your model's uncertainty?", rotated MNIST): test images
(all of them) rotated counter-clockwise by 0..180 degrees in 30 degree steps (ANGLES) with torchvision's rotate (bilinear,
about the image centre, zero fill: the black background of inputs scaled to [0, 1]); accuracy, NLL
and ECE per angle from suite.evaluate.metrics.classification, and their mean over the angles.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from scipy.stats import rankdata
from torch import Tensor

from ..methods import Method
from . import metrics

ANGLES = tuple(range(0, 181, 30))  # 7 points per curve: a shift is timed at every level of every trial
# the out-of-distribution images of a trial: the other dataset's test split (same 28x28 grey format,
# other content), as in the Bayesian-pruning uncertainty studies that pair MNIST with Fashion-MNIST
PARTNER = {"mnist": "fmnist", "fmnist": "mnist"}


def entropy(probs: Tensor) -> Tensor:
    """[..., C] -> [...]: -sum_c p log p in nats, with 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def decompose(samples: Tensor) -> dict[str, Tensor]:
    """samples [S, N, C] (softmax of S weight samples) -> per input [N]: total entropy of the mean
    prediction, expected entropy of the samples, and the mutual information total - expected (>= 0)."""
    total = entropy(samples.mean(0))
    expected = entropy(samples).mean(0)
    return {"entropy": total, "expected_entropy": expected, "mi": total - expected}


@torch.no_grad()
def mc_samples_on(model: Method, xs: Sequence[Tensor], n: int) -> list[Tensor]:
    """[n, N_i, C] softmax outputs of n weight samples for each input set x_i: each sample is applied to
    every set (one ensemble scores them all; a weight sample of a large network costs more than its
    forward pass). Drawn as Method.predict_mc draws them (same RNG use), so the mean for a set is
    predict_mc's output for the same seed."""
    out: list[list[Tensor]] = [[] for _ in xs]
    for _ in range(n):
        w = model.sample()
        for o, x in zip(out, xs):
            o.append(torch.softmax(model(x, w), -1))
    return [torch.stack(o) for o in out]


def auroc(score_in: Tensor | np.ndarray, score_out: Tensor | np.ndarray) -> float:
    """P(OOD score > in-distribution score) + P(tie) / 2: the Mann-Whitney U of the OOD scores
    over n_out n_in, from the ranks of all scores pooled (ties share their average rank)."""
    s_in, s_out = np.asarray(score_in, dtype=np.float64), np.asarray(score_out, dtype=np.float64)
    ranks = rankdata(np.concatenate([s_out, s_in]))  # method="average"
    u = ranks[:len(s_out)].sum() - len(s_out) * (len(s_out) + 1) / 2
    return float(u / (len(s_out) * len(s_in)))


def aupr(score_in: Tensor | np.ndarray, score_out: Tensor | np.ndarray) -> float:
    """Average precision with OOD positive: at each distinct score, highest first, precision of
    everything at or above it, weighted by the recall it adds."""
    s = np.concatenate([np.asarray(score_out, dtype=np.float64), np.asarray(score_in, dtype=np.float64)])
    pos = np.concatenate([np.ones(len(score_out)), np.zeros(len(score_in))])
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each run of tied scores
    tp, seen = np.cumsum(pos)[last], np.arange(1, len(s) + 1)[last]
    recall_gain = np.diff(np.r_[0.0, tp]) / pos.sum()
    return float((recall_gain * tp / seen).sum())


def detection(probs_in: Tensor, probs_out: Tensor, tag: str, samples_in: Tensor | None = None,
              samples_out: Tensor | None = None) -> dict[str, float]:
    """OOD detection metrics of one model at level `tag`: ood_{auroc,aupr}_entropy_tag from the
    deterministic prediction's probabilities [N, C]; with Monte Carlo samples [S, N, C] also
    ood_{auroc,aupr}_{entropy,expected_entropy,mi}_mc_tag."""
    e_in, e_out = entropy(probs_in).cpu(), entropy(probs_out).cpu()
    out = {f"ood_auroc_entropy_{tag}": auroc(e_in, e_out), f"ood_aupr_entropy_{tag}": aupr(e_in, e_out)}
    if samples_in is not None and samples_out is not None:
        d_in, d_out = decompose(samples_in), decompose(samples_out)
        for k in d_in:
            a, b = d_in[k].cpu(), d_out[k].cpu()
            out[f"ood_auroc_{k}_mc_{tag}"], out[f"ood_aupr_{k}_mc_{tag}"] = auroc(a, b), aupr(a, b)
    return out


def rotate(x: Tensor, degrees: float) -> Tensor:
    """[N, 784] or [N, 28, 28] images rotated counter-clockwise by `degrees` (bilinear, zero fill).
    0 returns x unchanged, so the 0 degree entry is the unshifted test set exactly (the bilinear path
    is off by float rounding, ~1e-6, at 0)."""
    if degrees == 0:
        return x
    img = x.reshape(-1, 1, 28, 28)
    r = TF.rotate(img, float(degrees), interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
    return r.reshape(x.shape)


def rotations(x: Tensor, angles=ANGLES) -> dict[float, Tensor]:
    """angle -> x rotated by it: the shifted inputs, built once and reused for every model they test."""
    return {a: rotate(x, a) for a in angles}


@torch.no_grad()
def shift(predict: Callable[[Tensor], Tensor], rotated: Mapping[float, Tensor], y: Tensor, tag: str,
          per_angle: bool = True) -> dict[str, float]:
    """Accuracy, NLL and ECE of predict (inputs [N, 784] -> probabilities [N, C]) on the rotated inputs
    (rotations(x)): shift_{acc,nll,ece}_r{angle}_tag (only with per_angle), and their means over the
    angles, shift_{acc,nll,ece}_mean_tag."""
    out: dict[str, float] = {}
    by_metric = {k: [] for k in ("acc", "nll", "ece")}
    for a, xa in rotated.items():
        for k, v in metrics.classification(predict(xa), y).items():
            if per_angle:
                out[f"shift_{k}_r{a:g}_{tag}"] = v
            by_metric[k].append(v)
    out.update({f"shift_{k}_mean_{tag}": float(np.mean(v)) for k, v in by_metric.items()})
    return out
