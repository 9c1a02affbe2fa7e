"""The compacted forward against the dense one, by first hidden width (`--compact W,W,...`).

Sparse VD's natural level on LeNet-300-100 compacts to a net that reads the 681-pixel window its live
inputs span, then about 60-67 and 49 units (results/lenet). Its speed-up over the dense 784-300-100-10
forward depends on those shapes, not on the weights' values, so random weights of the same shapes
measure it at any first-layer width: suite.evaluate.compact.CompactMLP as shipped (hidden widths padded to
CompactMLP.PAD) and unpadded, and the padded net reading its live pixels by a gather instead of the
window (`--live N` of the window's 681 pixels live, at random, its two ends included; Sparse VD keeps
507, Bayesian Compression a few hundred), beside the dense forward, batch 1000, in side-by-side rounds
(latency.medians_ms). The padding, the gather and their figures: docs/performance.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..evaluate import latency
from ..evaluate.compact import CompactMLP

DENSE = (784, 300, 100, 10)   # LeNet-300-100
WINDOW = (67, 748)            # the input pixels Sparse VD's natural level keeps span 67..747 (MNIST, seed 0)
SECOND = 49                   # its second hidden layer's units
LIVE = 507                    # its live pixels inside the window
BATCH = 1000


class Unpadded(CompactMLP):
    PAD = 1


def compacted(width: int, padded: bool, gen: torch.Generator, live: int = LIVE) -> CompactMLP:
    """A compacted net of Sparse VD's natural-level shapes with `width` first-layer units and `live` of the
    window's pixels live (the others' columns zero), random weights."""
    lo, hi = WINDOW
    inner = torch.randperm(hi - lo - 2, generator=gen)[:live - 2] + lo + 1
    index = torch.cat([torch.tensor([lo, hi - 1]), inner]).sort().values
    shapes = [(width, hi - lo), (SECOND, width), (DENSE[-1], SECOND)]
    layers = [(torch.randn(o, i, generator=gen), torch.randn(o, generator=gen)) for o, i in shapes]
    dead = torch.ones(hi - lo, dtype=torch.bool)
    dead[index - lo] = False
    layers[0][0][:, dead] = 0
    return (CompactMLP if padded else Unpadded)(index, layers, list(DENSE))


def dense_forward(gen: torch.Generator):
    """The plain dense LeNet-300-100 forward: F.linear per layer, ReLU between (a trial times its
    method's own eval forward, which for Sparse VD also applies the mask)."""
    layers = [(torch.randn(o, i, generator=gen), torch.randn(o, generator=gen)) for i, o in zip(DENSE, DENSE[1:])]

    def forward(x: torch.Tensor) -> torch.Tensor:
        for k, (w, b) in enumerate(layers):
            x = F.linear(x, w, b)
            x = F.relu(x) if k < len(layers) - 1 else x
        return x
    return forward


@torch.no_grad()
def race_compact(widths: list[int], live: int = LIVE, budget_s: float = 0.4) -> list[dict[str, float]]:
    """One row per width: median ms of the dense, unpadded, padded (window) and padded gather forwards,
    and the speed-ups."""
    gen = torch.Generator().manual_seed(0)
    x, dense = torch.randn(BATCH, DENSE[0], generator=gen), dense_forward(gen)
    rows = []
    for w in widths:
        unpadded, padded = compacted(w, False, gen, live), compacted(w, True, gen, live)
        ms = latency.medians_ms({"dense": lambda: dense(x), "unpadded": lambda: unpadded(x), "padded": lambda: padded(x),
                                 "gather": lambda: padded.gather_forward(x)},
                                torch.device("cpu"), budget_s=budget_s, min_reps=20, max_reps=2000)
        rows.append({"width": w, "live": live, **{f"{k}_ms": v for k, v in ms.items()},
                     **{f"{k}_speedup": ms["dense"] / ms[k] for k in ("unpadded", "padded", "gather")}})
    return rows


def print_table(rows: list[dict[str, float]]) -> None:
    print(f"\n{'compacted forward, batch 1000':34} {'dense ms':>9} {'unpadded':>9} {'padded':>9} {'gather':>9} "
          f"{'x unpadded':>11} {'x padded':>9} {'x gather':>9}")
    for r in rows:
        shape = f"681 ({r['live']} live)-{r['width']}-{SECOND}-10"
        print(f"{shape:34} "
              f"{r['dense_ms']:9.3f} {r['unpadded_ms']:9.3f} {r['padded_ms']:9.3f} {r['gather_ms']:9.3f} "
              f"{r['unpadded_speedup']:11.2f} {r['padded_speedup']:9.2f} {r['gather_speedup']:9.2f}")
