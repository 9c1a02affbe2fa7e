"""Ratios across widths: ours SGD, BBB and Sparse VD with two hidden layers of each width (the `scaling`
grid's 100 to 1200 units; Blundell et al. 2015 trained 1200), all in one interleaved race, so every
width's BBB / SGD and Sparse VD / SGD is measured side by side, under the same load as the others'."""
from __future__ import annotations

import contextlib

import torch

from ..config import load_grid
from ..methods.base import make_layout
from .race import race
from .steps import Step, ours

METHODS = (("SGD", "sgd"), ("BBB", "bbb"), ("Sparse VD", "sparse_vd"))  # (label, registered method)


def scaling_widths() -> list[int]:
    """The hidden widths of the `scaling` grid (suite/grids/scaling.yaml), smallest first."""
    return sorted({t.hidden[0] for t in load_grid("scaling").trials})


def name(label: str, width: int) -> str:
    return f"ours {label} @{width}"


def contenders(x, y, widths: list[int], samples: int) -> dict[str, Step]:
    """Each method's training step at each width, as a trial builds it (784-width-width-10)."""
    return {name(label, w): ours(method, x, y, samples, hidden=(w, w)) for w in widths for label, method in METHODS}


def table(ms: dict[str, float], widths: list[int]) -> list[dict[str, float]]:
    """One row per width: its parameter count, each method's median ms per step, the two ratios."""
    rows = []
    for w in widths:
        sgd, bbb, svd = (ms[name(label, w)] for label, _ in METHODS)
        rows.append({"width": w, "n_params": make_layout([784, w, w, 10])[-1].end, "sgd_ms": sgd, "bbb_ms": bbb,
                     "sparse_vd_ms": svd, "bbb_over_sgd": bbb / sgd, "sparse_vd_over_sgd": svd / sgd})
    return rows


def race_widths(x, y, widths: list[int], rounds: int, steps: int, samples: int) -> list[dict[str, float]]:
    """The table of one race of every method at every width (race(): interleaved rounds, medians)."""
    return table(race(contenders(x, y, widths, samples), rounds, steps, warmup=10), widths)


def static_shapes(n_widths: int) -> contextlib.AbstractContextManager:
    """Compile each width's kernels for its own static shapes, as a trial (one width per process)
    does: by default dynamo would compile the second size it sees for dynamic shapes, and stop
    recompiling after 8."""
    return torch._dynamo.config.patch(automatic_dynamic_shapes=False, recompile_limit=max(8, n_widths + 1))


def print_table(rows: list[dict[str, float]]) -> None:
    print(f"\n{'training step, 784-w-w-10':26} {'params':>10} {'SGD ms':>8} {'BBB ms':>8} {'SVD ms':>8} "
          f"{'BBB/SGD':>8} {'SVD/SGD':>8}")
    for r in rows:
        print(f"{'w = ' + str(r['width']):26} {r['n_params']:10,d} {r['sgd_ms']:8.2f} {r['bbb_ms']:8.2f} "
              f"{r['sparse_vd_ms']:8.2f} {r['bbb_over_sgd']:8.2f} {r['sparse_vd_over_sgd']:8.2f}")
