"""The per-kernel table in N fresh processes, one after another. Some compiled kernels run at a
different speed from one process to the next and steadily within one (docs/performance.md, open
questions): one process's medians cannot show that, the range over processes does."""
from __future__ import annotations

import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from ..fpmode import flush_denormals
from .kernels import breakdown
from .steps import mnist

VARIES = 1.25  # a kernel whose slowest process takes more than this times its fastest is marked
Table = dict[str, dict[str, dict[str, float | None]]]


def one_process(root: Path | None, rounds: int, steps: int, threads: int | None) -> Table:
    """The per-kernel table as the bench measures it, in the calling process (MNIST from root, or
    random inputs of MNIST's shape when root is None)."""
    flush_denormals()
    if threads:
        torch.set_num_threads(threads)
    x, y = mnist(root) if root is not None else (torch.rand(1000, 784), torch.randint(0, 10, (1000,)))
    return breakdown(x, y, rounds, steps)


def in_processes(n: int, root: Path | None, rounds: int, steps: int, threads: int | None) -> list[Table]:
    """one_process in n fresh interpreters (spawned, never two at once), in order."""
    ctx = multiprocessing.get_context("spawn")
    tables = []
    for _ in range(n):
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            tables.append(pool.submit(one_process, root, rounds, steps, threads).result())
    return tables


def spread(tables: list[Table]) -> dict[str, dict[str, dict[str, object]]]:
    """{method: {kernel: {median_ms, min_ms, max_ms, max_over_min, ms}}} over the processes' tables;
    max_over_min is None where the fastest is not above 0 ("other" is a difference and can be)."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for method, kernels in tables[0].items():
        out[method] = {}
        for kernel in kernels:
            ms = [t[method][kernel]["ms"] for t in tables]
            lo, hi = min(ms), max(ms)
            out[method][kernel] = {"median_ms": statistics.median(ms), "min_ms": lo, "max_ms": hi,
                                   "max_over_min": hi / lo if lo > 0 else None, "ms": ms}
    return out


def varying(sp: dict[str, dict[str, dict[str, object]]]) -> list[str]:
    """'method/kernel' of every kernel whose slowest process took more than VARIES times its fastest."""
    return [f"{m}/{k}" for m, ks in sp.items() for k, v in ks.items()
            if v["max_over_min"] is not None and v["max_over_min"] > VARIES]


def print_spread(sp: dict[str, dict[str, dict[str, object]]], n: int) -> list[str]:
    """Print median and range of each kernel over the processes; returns the varying kernels."""
    marked = varying(sp)
    print(f"\nper-kernel breakdown in {n} fresh processes, ms (median of each process's median)")
    print(f"{'method':9} {'kernel':16} {'median':>8} {'min':>8} {'max':>8} {'max/min':>8}")
    for m, ks in sp.items():
        for k, v in ks.items():
            ratio = f"{v['max_over_min']:8.2f}" if v["max_over_min"] is not None else f"{'':8}"
            print(f"{m:9} {k:16} {v['median_ms']:8.3f} {v['min_ms']:8.3f} {v['max_ms']:8.3f} {ratio}"
                  + ("  <-- varies" if f"{m}/{k}" in marked else ""))
    if marked:
        print(f"  varies between processes (max/min > {VARIES:g}): {', '.join(marked)}")
    return marked
