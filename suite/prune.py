"""Pruning after training: importance scores -> keep mask (weights, or whole input units) -> zeros in the forward pass.

One path for every method: a model exposes a flat importance score over its flat parameter vector
(L1 |w|, SNR |mu|/sigma, or random) and a prune_ that writes the zeros into the tensors its forward
reads. Why not torch.nn.utils.prune: it masks a Parameter as weight_orig * mask in a forward
pre-hook, which cannot make a Bayesian weight's sigma = softplus(rho) exactly 0, so BBB would need a
second mechanism; writing zeros into the flat vector also costs nothing per forward pass.
Sparsity is then *measured* on the tensors F.linear receives during a real forward pass.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .methods import Method


def level_tag(p: float | str) -> str:
    """Metric suffix of a sparsity level: 0.9 -> p90, 0 -> p00, 1.0 -> p100; 'nat' (natural) stays."""
    return p if isinstance(p, str) else f"p{round(p * 100):02d}"


def prunable(model: Method, prune_biases: bool) -> Tensor:
    """Bool [P]: which entries of the flat vector may be pruned (weights, and biases if asked)."""
    return torch.ones(model.n_params, dtype=torch.bool) if prune_biases else model.weight_entries()


def scores(model: Method, kind: str, seed: int, structure: str = "weights") -> Tensor:
    """Flat [P] importance, lower = pruned first. random is seeded so a trial stays reproducible.
    structure units: every weight carries its input unit's score (Method.unit_score; random: one draw
    per unit), every bias +inf, so a caller marks pruned entries -inf as it does for weights."""
    if structure == "units":
        g = (torch.rand(model.n_groups, generator=torch.Generator().manual_seed(seed)) if kind == "random"
             else model.unit_score(kind).detach().float().cpu())
        return model.per_weight(g, float("inf")).cpu()
    if kind == "random":
        return torch.rand(model.n_params, generator=torch.Generator().manual_seed(seed))
    return model.score(kind).float().cpu()


def pruning_order(score: Tensor, magnitude: Tensor) -> Tensor:
    """Positions of score [n] in pruning order: ascending score, ties by ascending magnitude, then by
    ascending position. Why: trained scores tie in bulk (Sparse VD's log alpha sits at its clip for most
    weights), and which tied entries torch.topk returns depends on its kernel and thread count; a
    lexicographic key makes the mask a function of the values alone. Built from stable sorts, last key
    first (a stable sort keeps the order of equal keys)."""
    by_magnitude = torch.sort(magnitude, stable=True).indices
    return by_magnitude[torch.sort(score[by_magnitude], stable=True).indices]


def keep_mask(score: Tensor, allowed: Tensor, sparsity: float, scope: str, model: Method,
              structure: str = "weights") -> tuple[Tensor, float]:
    """Bool [P] keep mask pruning exactly round(sparsity * n) allowed entries (global) or that
    fraction of every weight matrix / bias vector (layer), first in pruning_order: lowest score, ties
    by the smaller |point weight| (model.point_weights(): the weights the prediction uses), then the lower
    flat index; structure units: whole input units (unit_mask). Also returns the score threshold (largest
    pruned score; -inf if none; NaN for layer scope, where every layer has its own) for the plots."""
    if structure == "units":
        return unit_mask(score, allowed, sparsity, scope, model)
    keep = torch.ones_like(allowed)
    magnitude = model.point_weights().detach().abs().float().cpu()
    groups = [allowed.nonzero().squeeze(1)] if scope == "global" else [
        torch.arange(s.start, s.end) for s in model.layout if allowed[s.start]]
    threshold = float("-inf")
    for idx in groups:
        k = round(sparsity * len(idx))
        if k == 0:
            continue
        low = idx[pruning_order(score[idx], magnitude[idx])[:k]]
        keep[low] = False
        threshold = max(threshold, float(score[low].max()))
    return keep, threshold if scope == "global" else float("nan")


def unit_mask(score: Tensor, allowed: Tensor, sparsity: float, scope: str, model: Method) -> tuple[Tensor, float]:
    """Structured pruning (Louizos, Ullrich & Welling 2017 prune neurons): whole input units, so the
    pruned net is a smaller dense net. score: [P] as scores(structure="units") gives it, pruned entries
    -inf; a unit scores the max over its column (-inf: nothing of it is left). Units go in pruning_order
    (ties by the RMS of the column's |point weight|, then the lower unit index) until at least
    round(sparsity * n) allowed entries are removed (global; layer: of every layer); a removed unit
    takes its column, and a hidden one its row and bias in the layer before (Method.units_keep), all
    counted. Units scoring -inf always go, so a mask that only shrinks stays exact (tighten); the
    output units never go. The level may overshoot: the sparsity is measured, as always.
    Counting a prefix of c_i units of layer i's input and r_i of its output (r_i = c_{i+1}, 0 for the
    last layer) removes c_i n_out + r_i n_in - c_i r_i weights (inclusion-exclusion), plus r_i biases
    when they are prunable, so every prefix is counted at once."""
    g_score = model.reduce_units(score, "max")
    g_mag = model.reduce_units(model.point_weights().detach().abs().float().cpu(), "rms")
    slices, widths = model.group_slices(), model.sizes
    biases = bool(allowed[model.layout[1].start])  # prunable() allows every bias or none
    n_layers = len(slices)

    def removed(i: int, c: Tensor, r: Tensor) -> Tensor:
        """Entries of layer i removed by c of its input units and r of its output units."""
        return c * widths[i + 1] + r * widths[i] - c * r + (r if biases else 0)

    drop = torch.zeros(model.n_groups, dtype=torch.bool)
    if scope == "global":
        order = pruning_order(g_score, g_mag)
        layer = torch.cat([torch.full((sl.stop - sl.start,), i) for i, sl in enumerate(slices)])[order]
        c = torch.cat([torch.zeros(1, n_layers, dtype=torch.long),
                       torch.nn.functional.one_hot(layer, n_layers).cumsum(0)])  # [G + 1, layers]: units per prefix
        r = torch.cat([c[:, 1:], torch.zeros(len(c), 1, dtype=torch.long)], 1)
        count = sum(removed(i, c[:, i], r[:, i]) for i in range(n_layers))
        k = round(sparsity * int(allowed.sum()))
        enough = (count >= k).nonzero()
        t = max(int(enough[0]) if len(enough) else model.n_groups, int(torch.isneginf(g_score).sum()))
        drop[order[:t]] = True
        threshold = float(g_score[order[:t]].max()) if t else float("-inf")
    else:  # from the output layer back: each layer's count depends on the rows its next layer removes
        r = 0
        for i in reversed(range(n_layers)):
            sl = slices[i]
            order = pruning_order(g_score[sl], g_mag[sl])
            k = round(sparsity * (widths[i] * widths[i + 1] + (widths[i + 1] if biases else 0)))
            counts = removed(i, torch.arange(widths[i] + 1), torch.tensor(r))
            enough = (counts >= k).nonzero()
            t = max(int(enough[0]) if len(enough) else widths[i], int(torch.isneginf(g_score[sl]).sum()))
            drop[sl.start + order[:t]] = True
            r = t
        threshold = float("nan")
    return model.units_keep(~drop) | ~allowed, threshold


def pruned_copy(model: Method, keep: Tensor) -> Method:
    """A fresh copy of the trained model with the mask applied (the original stays intact)."""
    m = copy.deepcopy(model)
    m.prune_(keep.to(m.point_weights().device))
    return m


def held_state(m: Method) -> dict[str, Tensor]:
    """A retrained level's model in its sparse form (CPU tensors): "held", its held mask (Method.held,
    bool [P]) packed 8 entries a byte (numpy.packbits' bit order, uint8 [ceil(P / 8)]), and for each
    [P] tensor of its state dict (one per parameter kind) the values of the held entries in index
    order; any other tensor (a method's per-group parameters) whole. The pruned entries are left out:
    held_model sets them as hold_ does (their
    log sigma^2 or log alpha may differ from the retrained model's, but every one multiplies a point
    weight of exactly 0, so the forward pass and every sample are the same). Reads the model only (no
    random numbers drawn)."""
    held = m.held.cpu()
    return {"held": torch.from_numpy(np.packbits(held.numpy())),
            **{k: v.detach().cpu()[held] if v.shape == held.shape else v.detach().cpu() for k, v in m.state_dict().items()}}


@torch.no_grad()
def held_model(model: Method, state: Mapping[str, Tensor | np.ndarray]) -> Method:
    """The level model held_state stored, rebuilt from the trained model: a copy that holds the
    stored mask (hold_) with the held entries' stored values written back (state: held_state's
    tensors, or the arrays of its levels/pNN.npz artifact)."""
    keep = torch.from_numpy(np.unpackbits(np.asarray(state["held"]), count=model.n_params).astype(bool))
    m = copy.deepcopy(model)
    m.hold_(keep.to(m.point_weights().device))
    for k, v in m.state_dict().items():  # the state dict's tensors share the parameters' storage
        if v.shape == m.held.shape:
            v[m.held] = torch.as_tensor(state[k], device=v.device)
        else:  # a per-group or per-layer tensor (Bayesian Compression's scales), stored whole
            v.copy_(torch.as_tensor(state[k], device=v.device))
    return m


class _CaptureLinear(TorchFunctionMode):
    """Records the (weight, bias) tensors of every F.linear call made during a forward pass."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[Tensor, Tensor | None]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            self.seen.append((args[1], args[2] if len(args) > 2 else kwargs.get("bias")))
        return func(*args, **kwargs)


@torch.no_grad()
def measured_sparsity(model: Method, x: Tensor, prune_biases: bool, flat: Tensor | None = None) -> tuple[float, list[float]]:
    """Fraction of zeros among the weights (and biases if prunable) that a real forward pass on x
    actually multiplies with, and the fraction of zero weights of each layer (biases not counted);
    `flat` picks the weights (default: the point estimate)."""
    with _CaptureLinear() as cap:
        model(x, flat)
    tensors = [t for w, b in cap.seen for t in ((w, b) if prune_biases else (w,)) if t is not None]
    zeros = sum(int((t == 0).sum()) for t in tensors)
    per_layer = [int((w == 0).sum()) / w.numel() for w, _ in cap.seen]
    return zeros / sum(t.numel() for t in tensors), per_layer
