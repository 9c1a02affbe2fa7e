"""Inference latency of a (pruned) model, dense vs sparse weights, and its size in bytes.

Dense: the model's own forward pass (zeros multiplied like any other weight).
Sparse: the point-estimate weight matrices converted to CSR, y = (W_csr @ x^T)^T + b per layer.
Candidates: torch CSR (CPU and CUDA) and scipy.sparse CSR (CPU only); every candidate's output is
checked against the dense forward before it is timed, and the fastest is reported (its name goes
into the results so a reader knows which kernel the number belongs to).
Timing: median of repeated runs after warm-up, synchronised on CUDA; each measurement gets a small
time budget so a trial's latency phase stays a few seconds.
"""
from __future__ import annotations

import contextlib
import fcntl
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from .methods import Method

BATCHES = (1, 1000)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def median_ms(fn: Callable[[], object], device: torch.device, budget_s: float = 0.05,
              min_reps: int = 5, max_reps: int = 200, warmup: int = 3) -> float:
    """Median wall time of fn() in ms over up to max_reps runs (at least min_reps, about budget_s)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _layers(model: Method) -> list[tuple[Tensor, Tensor]]:
    """[(W [out, in], b [out])] of the point-estimate weights (posterior mean for BBB)."""
    flat = model.point_weights().detach()
    segs = model.layout
    return [(flat[w.start:w.end].view(w.shape), flat[b.start:b.end]) for w, b in zip(segs[::2], segs[1::2])]


def _csr32(w: Tensor) -> Tensor:
    """torch CSR with int32 indices (torch defaults to int64): half the index bytes, same kernels
    and speed (measured), and the same bytes as scipy's CSR, so the reported size does not depend
    on which kernel won the timing."""
    c = w.to_sparse_csr()
    return torch.sparse_csr_tensor(c.crow_indices().int(), c.col_indices().int(), c.values(), c.shape,
                                   check_invariants=True)  # once per model; a bad index would segfault


def _torch_csr(model: Method) -> tuple[Callable[[Tensor], Tensor], int]:
    mats = [(_csr32(w), b) for w, b in _layers(model)]

    def forward(x: Tensor) -> Tensor:
        h = x.t()  # [in, B]: CSR @ dense keeps the sparse operand on the left
        for i, (w, b) in enumerate(mats):
            h = torch.addmm(b[:, None], w, h)
            if i < len(mats) - 1:
                h = torch.relu(h)
        return h.t()
    size = sum(w.values().nbytes + w.col_indices().nbytes + w.crow_indices().nbytes + b.nbytes for w, b in mats)
    return forward, size


def _scipy_csr(model: Method) -> tuple[Callable[[Tensor], Tensor], int]:
    # scipy picks int32 indices when they fit
    mats = [(scipy.sparse.csr_matrix(w.cpu().numpy()), b.cpu().numpy()[:, None]) for w, b in _layers(model)]

    def forward(x: Tensor) -> Tensor:
        h = x.numpy().T
        for i, (w, b) in enumerate(mats):
            h = w @ h + b
            if i < len(mats) - 1:
                np.maximum(h, 0, out=h)
        return torch.from_numpy(np.ascontiguousarray(h.T))
    size = sum(w.data.nbytes + w.indices.nbytes + w.indptr.nbytes + b.nbytes for w, b in mats)
    return forward, size


LOCK = Path(tempfile.gettempdir()) / "bayes-prune-bench-latency.lock"


@contextlib.contextmanager
def exclusive(path: Path = LOCK):
    """One latency phase at a time per machine (an flock shared by all processes on the node).
    Why: trials scheduled side by side would otherwise time their forward passes while competing
    for the same cores and memory bandwidth; taking turns keeps latency runs from disturbing each
    other (suite.bench --isolation measures the effect). Training neighbours still run meanwhile."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@torch.no_grad()
def measure(model: Method, x: Tensor, tag: str, mc_samples: int = 0,
            lock: bool = True) -> tuple[dict[str, float], dict[str, str]]:
    """Latency and size metrics for one pruned model; x: [>=1000, 784] inputs on the model's device.
    mc_samples > 0 (BBB) also times the Monte Carlo ensemble prediction (latency_mc_bB_ms_tag).
    lock: hold the node's latency lock (`exclusive`) while timing; False only to measure what it prevents.
    Returns (metrics named as in docs/mlflow.md's metric table with suffix tag, info {sparse_format_bB_tag: fastest kernel})."""
    with exclusive() if lock else contextlib.nullcontext():
        return _measure(model, x, tag, mc_samples)


def _measure(model: Method, x: Tensor, tag: str, mc_samples: int) -> tuple[dict[str, float], dict[str, str]]:
    model.eval()
    device = x.device
    candidates = {"torch_csr": _torch_csr}
    if device.type == "cpu":
        candidates["scipy_csr"] = _scipy_csr
    out: dict[str, float] = {"size_dense_bytes_" + tag: float(model.n_params * 4)}
    best: dict[int, tuple[float, str]] = {}
    sizes = {}
    for name, build in candidates.items():
        fwd, sizes[name] = build(model)
        for bsz in BATCHES:
            xb = x[:bsz]
            torch.testing.assert_close(fwd(xb), model(xb), rtol=1e-4, atol=1e-4)  # same numbers, or no timing
            ms = median_ms(lambda: fwd(xb), device)
            if bsz not in best or ms < best[bsz][0]:
                best[bsz] = (ms, name)
    for bsz in BATCHES:
        xb = x[:bsz]
        out[f"latency_dense_b{bsz}_ms_{tag}"] = median_ms(lambda: model(xb), device)
        out[f"latency_sparse_b{bsz}_ms_{tag}"] = best[bsz][0]
        if mc_samples:
            out[f"latency_mc_b{bsz}_ms_{tag}"] = median_ms(lambda: model.predict_mc(xb, mc_samples), device)
    out["size_csr_bytes_" + tag] = float(sizes[best[1000][1]])
    return out, {f"sparse_format_b{bsz}_{tag}": best[bsz][1] for bsz in BATCHES}
