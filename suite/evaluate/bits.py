"""Compression as the field reports it: "after pruning" and "after precision reduction" (Louizos,
Ullrich & Welling 2017, "Bayesian Compression for Deep Learning", Table 1), per level.

After pruning: dense weights / nonzero weights (weight matrices of the pruned model's deterministic
prediction; biases left out), the ratio Han et al. and Molchanov et al. report.

After precision reduction: the float32 network's bits (32 x every weight and bias) over the bits the
level's network takes stored at reduced precision. What is stored is the compacted network
(compact.py: dead units removed, the same function), each weight matrix in fixed point:

- fraction bits F per layer. Methods with posterior variances (Method.weight_variance): the paper's
  rule as the authors' tutorial code computes it (KarenUllrich/Tutorial_BayesianCompressionForDL,
  compression.py): per kept weight j, F_j = #{t in 1..23 : 2 var_j < 2^-t} (the number of significand
  bits whose unit round-off 2^-t stays above twice the weight's variance), and the layer takes
  ceil(mean_j F_j). The tutorial averages over every entry of the compacted matrix, a pruned entry
  inside it (variance 0) counting 23 bits; here only the kept weights count: a pruned entry is not
  stored, or stored as an exact 0. Point-estimate methods (SGD, Dropout, L0): per layer the fewest
  fraction bits, found by bisection, that keep validation accuracy within TOLERANCE of the float net's
  (validation_fraction_bits), never the test split.
- values: w rounded to the nearest multiple of 2^-F (half a step of error at most, as the tutorial's
  special_round); a layer's value width is b = 1 + m bits, a sign and m = bit_length(max |code|)
  magnitude bits, the integer/fraction split the layer's range needs (leading zero bits are implied
  by F, stored in the layer's header). The tutorial adds a floating-point exponent instead; fixed
  point is the paper's stated format.
- per layer the cheaper of two formats (bits_format tag): dense (rows x cols x b) or sparse with
  relative indices (Han et al. 2016, "Deep Compression", sec. 3): the nonzeros in row-major order,
  each an entry of k index bits + b value bits holding the gap d >= 1 from the previous nonzero; a gap
  over 2^k takes ceil(d / 2^k) entries (filler zeros every 2^k places), k in 1..16 chosen per layer.
  Plus the layer's biases in float32 and a HEADER_BITS header, and once per network a 1-bit-per-pixel
  mask of the live inputs (the compacted first layer reads only them).

The quantised network's test accuracy is measured (quant_acc), not assumed.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..methods import Method
from .compact import CompactMLP, point_layers
from .metrics import accuracy

MAX_FRACTION_BITS = 23  # float32's significand bits: the tutorial's t = 1..23
TOLERANCE = 0.001       # validation accuracy a point-estimate net may lose to its precision: 0.1 percentage points
HEADER_BITS = 64        # per layer: rows and columns (16 bits each), b, F, k and the format (8 bits each)
BIAS_BITS = 32          # biases are stored as they are, float32
INDEX_BITS = range(1, 17)  # relative-index widths k tried per layer (Han et al.: 5 for fully connected layers)

Layers = list[tuple[Tensor, Tensor]]


def variance_fraction_bits(var: Tensor) -> int:
    """The paper's fraction bits of a layer from the posterior variances var [n] of its kept weights:
    ceil(mean_j #{t in 1..23 : 2 var_j < 2^-t}) (module docstring); 0 for a layer that kept none."""
    if var.numel() == 0:
        return 0
    steps = 2.0 ** -torch.arange(1, MAX_FRACTION_BITS + 1, dtype=torch.float64, device=var.device)
    per_weight = (2 * var.double()[:, None] < steps).sum(1)
    return math.ceil(int(per_weight.sum()) / per_weight.numel())  # exact: integer sum over count


def fixed_point(w: Tensor, frac_bits: int) -> Tensor:
    """w's integer codes at frac_bits fraction bits: round(w 2^F), float64 (exact: |code| < 2^53)."""
    return torch.round(w.double() * 2.0 ** frac_bits)


def quantise(w: Tensor, frac_bits: int | None) -> tuple[Tensor, int]:
    """w rounded to the nearest multiple of 2^-frac_bits, and its value width b (sign + the magnitude
    bits of the largest code); frac_bits None: w as it is, 32 bits (float32)."""
    if frac_bits is None:
        return w, 32
    code = fixed_point(w, frac_bits)
    magnitude = int(code.abs().max()).bit_length() if code.numel() else 0
    return (code * 2.0 ** -frac_bits).to(w.dtype), 1 + magnitude


def relative_index_entries(w: Tensor, k: int) -> int:
    """Entries of w's nonzeros in Han et al.'s relative-index format with k index bits: a gap d from the
    previous nonzero (row-major; the first counts from position -1) takes ceil(d / 2^k) entries."""
    pos = w.flatten().nonzero().squeeze(1)
    gaps = torch.diff(pos, prepend=pos.new_tensor([-1]))
    return int(((gaps + 2 ** k - 1) // 2 ** k).sum())


def cheapest(w: Tensor, b: int) -> tuple[int, int]:
    """Bits of weight matrix w at b bits per value in the cheaper format, and its index width k (0: dense)."""
    dense = w.numel() * b
    sparse, k = min((relative_index_entries(w, k) * (k + b), k) for k in INDEX_BITS)
    return (sparse, k) if sparse < dense else (dense, 0)


def weight_bits(w: Tensor, b: int) -> tuple[int, str]:
    """Bits of weight matrix w at b bits per value, in the cheaper format: (bits, "dense" | "sparse kK")."""
    bits, k = cheapest(w, b)
    return bits, f"sparse k{k}" if k else "dense"


def logits(layers: Layers, h: Tensor, start: int = 0) -> Tensor:
    """The MLP's logits from activation h entering layer `start` (ReLU after every layer but the last)."""
    for i in range(start, len(layers)):
        w, b = layers[i]
        h = F.linear(h, w, b)
        if i < len(layers) - 1:
            h = F.relu(h)
    return h


def quantised(layers: Layers, frac_bits: list[int | None]) -> tuple[Layers, list[int]]:
    """The layers with their weights quantised (biases kept), and each layer's value width b."""
    qs = [quantise(w, f) for (w, _), f in zip(layers, frac_bits)]
    return [(wq, b) for (wq, _), (_, b) in zip(qs, layers)], [bits for _, bits in qs]


def fewest_passing(passes: Callable[[int], bool]) -> int | None:
    """The fewest fraction bits F in 0..23 with passes(F), by bisection: 23 is tried first (None if it
    fails), then the interval (failing or -1, passing] is halved, at most 6 calls in all. The answer passed and
    F - 1 failed (or F = 0), both measured; bisection takes the accuracy to grow with F, which rounding
    makes only roughly true, so it is the smallest passing F next to a failing one."""
    if not passes(MAX_FRACTION_BITS):
        return None
    lo, hi = -1, MAX_FRACTION_BITS
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return hi


def validation_fraction_bits(layers: Layers, x_val: Tensor, y_val: Tensor, tol: float = TOLERANCE) -> list[int | None]:
    """Fraction bits per layer of a point-estimate net, chosen on validation data (x_val already the
    layers' input): layer by layer from the first, the fewest F (fewest_passing) at which the validation
    accuracy of the net (the earlier layers at their chosen F, the later ones float32) stays >= the
    float net's minus tol (None: even 23 fails, the layer stays float32). Every accepted choice was
    measured with the earlier ones in place, so the final net loses at most tol on validation."""
    floor = accuracy(logits(layers, x_val), y_val) - tol
    chosen: list[int | None] = []
    h = x_val
    for i, (w, b) in enumerate(layers):
        def passes(f: int) -> bool:
            return accuracy(logits([*layers[:i], (quantise(w, f)[0], b), *layers[i + 1:]], h, i), y_val) >= floor
        chosen.append(fewest_passing(passes))
        if i < len(layers) - 1:  # the next layer's input, this layer at its chosen precision
            h = F.relu(F.linear(h, quantise(w, chosen[i])[0], b))
    return chosen


def stored_layers(c: CompactMLP) -> Layers:
    """The compacted net's layers as stored: the first reads the live inputs only (c.index), not the window."""
    (w0, b0), *rest = c.layers()
    return [(w0[:, c.index - c.lo], b0), *rest]


def stored_bits(layers: Layers, value_bits: list[int], n_inputs: int) -> tuple[int, list[str]]:
    """Bits of the stored network: per layer its weights in the cheaper format, float32 biases and a
    header; once, the live-input mask (n_inputs bits). Returns (bits, each layer's format)."""
    total, formats = n_inputs, []
    for (w, b), vb in zip(layers, value_bits):
        bits, fmt = weight_bits(w, vb)
        total += bits + BIAS_BITS * b.numel() + HEADER_BITS
        formats.append(fmt)
    return total, formats


@torch.no_grad()
def precision(model: Method, c: CompactMLP, val: tuple[Tensor, Tensor] | None) -> tuple[list[int | None], str] | None:
    """The fraction bits of each of c's stored layers (c: model's compaction) and the rule that chose
    them: the posterior variances of the model's kept weights, else the validation split val [x [N, 784],
    y]; None when the model has no variances and val is None (no precision is chosen)."""
    var = model.weight_variance()
    if var is not None:
        segs = [s for s in model.layout if not s.is_bias]
        kept = [w != 0 for w, _ in point_layers(model)]
        return [variance_fraction_bits(var[s.start:s.end].view(s.shape)[k]) for s, k in zip(segs, kept)], "posterior variance"
    if val is None:
        return None
    return validation_fraction_bits(stored_layers(c), val[0][:, c.index], val[1]), "validation"


@torch.no_grad()
def measure(model: Method, c: CompactMLP, x: Tensor, y: Tensor, val: tuple[Tensor, Tensor] | None,
            tag: str) -> tuple[dict[str, float], dict[str, str]]:
    """Compression of a pruned model (c its compaction, compact.compact) at level `tag`: after pruning
    always; with a precision rule (posterior variances, or validation data val for a point-estimate
    method) also the value bits, the stored size, the ratio after precision reduction and the
    quantised net's accuracy on the test split x, y. Returns (metrics, info: the rule and formats)."""
    pruned = point_layers(model)
    dense_w = sum(w.numel() for w, _ in pruned)
    kept = [w != 0 for w, _ in pruned]
    nonzero = sum(int(k.sum()) for k in kept)
    out = {f"compression_pruned_{tag}": dense_w / nonzero} if nonzero else {}
    chosen = precision(model, c, val)
    if chosen is None:
        return out, {}
    (frac, rule), layers = chosen, stored_layers(c)
    q, value_bits = quantised(layers, frac)
    bits, formats = stored_bits(q, value_bits, model.sizes[0])
    n_kept = [int((w != 0).sum()) for w, _ in layers]
    out.update({f"bits_l{i + 1}_{tag}": float(b) for i, b in enumerate(value_bits)})
    out.update({f"bits_{tag}": sum(n * b for n, b in zip(n_kept, value_bits)) / max(sum(n_kept), 1),
                f"stored_bytes_{tag}": bits / 8,
                f"compression_bits_{tag}": 32 * model.n_params / bits,
                f"quant_acc_{tag}": accuracy(logits(q, x[:, c.index]), y)})
    return out, {"bits_rule": rule, f"bits_format_{tag}": ",".join(formats)}
