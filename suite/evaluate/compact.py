"""Compaction: the small dense MLP a pruned network really is, and what it buys in size and speed.

Unstructured pruning leaves a 784-h1-...-10 network full of zeros. Some of those zeros remove whole
units: an input pixel no kept weight reads, a hidden unit whose outgoing weights are all pruned (it
feeds nothing), a hidden unit whose incoming weights are all pruned (its output is the constant
relu(b_j), so W_next[:, j] relu(b_j) moves into the next layer's bias). Removing one such unit can
strand another (its inputs lose their last reader, its readers their last input), so the removal
runs to a fixed point. What is left is a dense MLP reading a window of the input that computes the same
logits as the pruned model's deterministic prediction (Method.predict: the forward pass on
point_weights() in eval mode, where dropout is the identity), with fewer rows and columns.
Units are removed from the weights alone, never from data (a unit that is live but never fires
on the test set stays).

FLOPs per example count 2 per multiply-add of a weight matrix (a multiply and an add; bias adds
and ReLUs, O(width), are left out). flops_compact counts the live units (the net's size); flops_run what
the window forward multiplies: the whole input window and the padded widths, so the FLOPs ratio a
measured speed-up is read against (the gather forward, when it is the faster, multiplies the live
pixels only, between the two). Blalock et al. 2020 ("What is the state of neural network
pruning?") ask for this theoretical speed-up beside the compression ratio; ShrinkBench counts 1 per
multiply-add, which gives the same ratios. Latency: suite.evaluate.latency times the compacted
MLP beside the dense and CSR forwards.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods import Method


class CompactMLP(nn.Module):
    """x [B, 784] -> logits [B, 10]: the first layer reads the window x[:, lo:hi] of inputs that holds
    every live one, in place; then y = h W_i^T + b_i per layer, ReLU after all but the last. Weights are
    buffers (`weight_i`, `bias_i`, `index`: the live inputs): an inference model, exported as its state
    dict. `dense_widths` are the pruned model's widths, for the ratios.
    Two ways to read the input, the same logits: `forward` multiplies the window in place (the dead
    pixels inside it against zero columns of weight_0), `gather_forward` first copies the live pixels
    out (index_select). Which is faster depends on the net: with most pixels live (Sparse VD, SGD)
    the copy costs more than the few dead columns, with a few hundred pixels scattered over a wide
    window (Bayesian Compression) the dead columns cost more (docs/performance.md); `readers()` gives
    both and suite.evaluate.latency times them side by side and reports the faster. Exports use the window.
    The forward runs on copies whose hidden widths are padded with zero units to a multiple of PAD
    floats (zero rows, zero bias, so ReLU gives 0, and zero columns in the next layer): the same
    logits, and the GEMM kernels work in whole vector registers, which was faster at batch 1000 at
    every width measured (docs/performance.md). The state dict keeps the unpadded weights."""

    PAD = 16  # floats in one AVX-512 register, two AVX2 ones

    def __init__(self, index: Tensor, layers: list[tuple[Tensor, Tensor]], dense_widths: list[int]):
        super().__init__()
        self.register_buffer("index", index)
        self.lo = int(index[0]) if len(index) else 0
        self.hi = int(index[-1]) + 1 if len(index) else 0
        for i, (w, b) in enumerate(layers):
            self.register_buffer(f"weight_{i}", w.contiguous())
            self.register_buffer(f"bias_{i}", b.contiguous())
        self.n_layers, self.dense_widths = len(layers), list(dense_widths)
        for i, (w, b) in enumerate(self._padded(layers)):
            self.register_buffer(f"_run_weight_{i}", w, persistent=False)
            self.register_buffer(f"_run_bias_{i}", b, persistent=False)
        self.register_buffer("_run_gather_weight_0", self._run_weight_0[:, index - self.lo].contiguous(), persistent=False)

    def _padded(self, layers: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        out, n_in = [], None
        for i, (w, b) in enumerate(layers):
            rows = w.shape[0] if i == len(layers) - 1 else -(-w.shape[0] // self.PAD) * self.PAD
            cols = w.shape[1] if n_in is None else n_in
            wp, bp = w.new_zeros(rows, cols), b.new_zeros(rows)
            wp[:w.shape[0], :w.shape[1]], bp[:b.shape[0]] = w, b
            out.append((wp, bp))
            n_in = rows
        return out

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        return [(getattr(self, f"weight_{i}"), getattr(self, f"bias_{i}")) for i in range(self.n_layers)]

    def forward(self, x: Tensor) -> Tensor:
        return self._rest(F.linear(x[:, self.lo:self.hi], self._run_weight_0, self._run_bias_0))

    def gather_forward(self, x: Tensor) -> Tensor:
        return self._rest(F.linear(x.index_select(1, self.index), self._run_gather_weight_0, self._run_bias_0))

    def _rest(self, h: Tensor) -> Tensor:
        for i in range(1, self.n_layers):
            h = F.linear(F.relu(h), getattr(self, f"_run_weight_{i}"), getattr(self, f"_run_bias_{i}"))
        return h

    def readers(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """The two forwards by how they read the input (class docstring), for latency.measure's candidates."""
        return {"window": self.forward, "gather": self.gather_forward}

    @property
    def widths(self) -> list[int]:
        """Compacted widths, input first: [live inputs, h1, ..., 10] (weight_0 has hi - lo columns)."""
        return [len(self.index), *(w.shape[0] for w, _ in self.layers())]

    @property
    def run_widths(self) -> list[int]:
        """The widths forward() multiplies, input first: [hi - lo (the window), padded h1, ..., 10]."""
        return [self.hi - self.lo, *(getattr(self, f"_run_weight_{i}").shape[0] for i in range(self.n_layers))]


def point_layers(model: Method) -> list[tuple[Tensor, Tensor]]:
    """[(W [out, in], b [out])] views of the weights of the deterministic prediction."""
    flat = model.point_weights().detach()
    segs = model.layout
    return [(flat[w.start:w.end].view(w.shape), flat[b.start:b.end]) for w, b in zip(segs[::2], segs[1::2])]


@torch.no_grad()
def compact(model: Method) -> CompactMLP:
    """The pruned model's deterministic prediction as a dense MLP without dead units (module docstring).
    Layer i maps activation i to i + 1; activations 1..L-1 are hidden, the 10 outputs always stay."""
    ws, bs = zip(*[(w.clone(), b.clone()) for w, b in point_layers(model)])
    n_layers = len(ws)
    alive = [torch.ones(w.shape[1], dtype=torch.bool, device=w.device) for w in ws]  # activations 0..L-1
    changed = True
    while changed:
        changed = False
        for a in range(1, n_layers):  # hidden units with no live input: constant relu(b), folded forward
            dead = alive[a] & ~(ws[a - 1] != 0).any(1)
            if dead.any():
                bs[a].add_(ws[a][:, dead] @ F.relu(bs[a - 1][dead]))
                ws[a][:, dead] = 0
                alive[a] &= ~dead
                changed = True
        for a in range(n_layers):  # inputs and hidden units nothing reads
            unread = alive[a] & ~(ws[a] != 0).any(0)
            if unread.any():
                if a > 0:
                    ws[a - 1][unread] = 0
                alive[a] &= ~unread
                changed = True
    keep = [*alive, torch.ones(ws[-1].shape[0], dtype=torch.bool, device=ws[-1].device)]
    index = keep[0].nonzero().squeeze(1)
    keep[0] = torch.zeros_like(keep[0])  # the input window: from the first live input to the last
    if len(index):
        keep[0][index[0]:index[-1] + 1] = True
    layers = [(ws[i][keep[i + 1]][:, keep[i]], bs[i][keep[i + 1]]) for i in range(n_layers)]
    return CompactMLP(index, layers, model.sizes).eval()


def flops(widths: list[int]) -> int:
    """FLOPs per example of a dense MLP of these widths: 2 per weight (multiply-add)."""
    return 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


@torch.no_grad()
def stats(model: Method, c: CompactMLP) -> dict[str, float]:
    """Widths, parameter counts and FLOPs per example of a pruned model and its compaction: flops_compact
    of the live units, flops_run of what CompactMLP.forward multiplies (unsuffixed names; measure() adds
    the level tag)."""
    layers = point_layers(model)
    nnz_w = sum(int((w != 0).sum()) for w, _ in layers)
    out = {f"compact_width_l{i}": float(n) for i, n in enumerate(c.widths[:-1])}  # l0: live inputs
    out.update(params_dense=float(model.n_params),
               params_nonzero=float(nnz_w + sum(int((b != 0).sum()) for _, b in layers)),
               params_compact=float(flops(c.widths) // 2 + sum(c.widths[1:])),  # live inputs, not the window
               flops_dense=float(flops(model.sizes)), flops_nonzero=float(2 * nnz_w), flops_compact=float(flops(c.widths)),
               flops_run=float(flops(c.run_widths)))
    return out


@torch.no_grad()
def measure(model: Method, tag: str) -> tuple[dict[str, float], CompactMLP]:
    """Compaction metrics of one pruned model at level `tag` (compact_width_l{i}, params_*, flops_*, each
    suffixed _tag) and the compacted MLP; suite.evaluate.latency.measure(others={"compact": c.readers()}) checks its
    logits against the model's forward at every timed batch size before timing it."""
    model.eval()
    c = compact(model)
    return {f"{k}_{tag}": v for k, v in stats(model, c).items()}, c
