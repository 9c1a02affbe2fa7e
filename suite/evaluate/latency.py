"""Inference latency of a (pruned) model, dense vs sparse weights, and its size in bytes.

Dense: the model's forward pass on its point-estimate weights, materialised once before timing, as
a deployed dense net stores them (zeros multiplied like any other weight). L0's weights are theta
times a gate computed from log alpha (Louizos et al. 2018): recomputing the gates in every timed
call would charge the dense net for work no deployment does (at batch 1 it dominated the call).
Sparse: the point-estimate weight matrices converted to CSR, y = (W_csr @ x^T)^T + b per layer.
Candidates: torch CSR (CPU and CUDA) and scipy.sparse CSR (CPU only); every candidate's output is
checked against the dense forward before it is timed, and the fastest is reported (its name goes
into the results so a reader knows which kernel the number belongs to).
Timing: the forwards of one batch size are timed side by side (each round calls every forward once,
in rotated order), medians after warm-up, synchronised on CUDA. A neighbour's load or a clock change then
hits dense, sparse and compacted alike within a round, so the speed-ups are taken per round (dense time /
the other forward's time in the same round) and logged as their median and quartiles; each forward
gets a small time budget so a level's phase stays short.
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

from ..methods import Method

BATCHES = (1, 1000)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def round_times_ms(fns: dict[str, Callable[[], object]], device: torch.device, budget_s: float = 0.05,
                   min_reps: int = 5, max_reps: int = 200, warmup: int = 3) -> dict[str, list[float]]:
    """Wall time in ms of each fn in every round, timed side by side: up to max_reps rounds, at least
    min_reps, about budget_s per fn in all. Round r calls every fn once, starting at the (r mod n)-th:
    rotated, so no forward always runs right after the same neighbour (whose cache and clock state it
    would inherit)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    start, rounds = time.perf_counter(), 0
    while rounds < max_reps and (rounds < min_reps or time.perf_counter() - start < budget_s * len(fns)):
        shift = rounds % len(names)
        for k in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[k]()
            sync()
            times[k].append(1000 * (time.perf_counter() - t0))
        rounds += 1
    return times


def medians_ms(fns: dict[str, Callable[[], object]], device: torch.device, **kw) -> dict[str, float]:
    """Median wall time in ms of each fn over round_times_ms' rounds (same keywords)."""
    return {k: statistics.median(v) for k, v in round_times_ms(fns, device, **kw).items()}


def ratio_quartiles(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile (numpy's linear interpolation) of the per-round ratios
    num[r] / den[r]. Why per round: both forwards of a round ran under the same load and clock, which
    a ratio of two medians taken over different rounds does not guarantee; the quartiles say how much
    the ratio moved from round to round."""
    q25, q50, q75 = np.quantile(np.asarray(num) / np.asarray(den), [0.25, 0.5, 0.75])
    return float(q50), float(q25), float(q75)


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
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # say why nothing moves: another trial or test on this machine is timing
            print(f"waiting for the latency lock ({path}): another process on this machine is timing", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@torch.no_grad()
def measure(model: Method, x: Tensor, tag: str, mc_samples: int = 0, lock: bool = True,
            others: dict[str, dict[str, Callable[[Tensor], Tensor]]] | None = None
            ) -> tuple[dict[str, float], dict[str, str]]:
    """Latency and size metrics for one pruned model; x: [>=1000, 784] inputs on the model's device.
    mc_samples > 0 (BBB) also times the Monte Carlo ensemble prediction (latency_mc_bB_ms_tag).
    others: more forwards of the same network by name, each as candidate implementations (the
    compacted MLP: name compact, candidates CompactMLP.readers()); every candidate must give the dense
    forward's outputs, all are timed side by side and the fastest is reported as
    latency_{name}_bB_ms_tag, its candidate's name as info {name}_format_bB_tag (as for the CSR kernels).
    lock: hold the node's latency lock (`exclusive`) while timing; False only to measure what it prevents.
    Returns (metrics named as in docs/mlflow.md's metric table with suffix tag, info {sparse_format_bB_tag:
    fastest kernel, {name}_format_bB_tag: fastest candidate of each of others})."""
    with exclusive() if lock else contextlib.nullcontext():
        return _measure(model, x, tag, mc_samples, others or {})


def _measure(model: Method, x: Tensor, tag: str, mc_samples: int,
             others: dict[str, dict[str, Callable[[Tensor], Tensor]]]) -> tuple[dict[str, float], dict[str, str]]:
    model.eval()
    device = x.device
    builders = {"torch_csr": _torch_csr}
    if device.type == "cpu":
        builders["scipy_csr"] = _scipy_csr
    sparse, sizes = {}, {}
    for name, build in builders.items():
        sparse[name], sizes[name] = build(model)
    groups = {"sparse": sparse, **others}   # forward name -> {candidate: fn}; the fastest candidate speaks for it
    out: dict[str, float] = {"size_dense_bytes_" + tag: float(model.n_params * 4)}
    info = {}
    weights = model.point_weights().detach()
    for bsz in BATCHES:
        xb = x[:bsz]
        want = model(xb, weights)
        fns = {"dense": lambda: model(xb, weights)}
        for g, cands in groups.items():
            for c, f in cands.items():
                torch.testing.assert_close(f(xb), want, rtol=1e-4, atol=1e-4)  # same numbers, or no timing
                fns[f"{g}/{c}"] = lambda f=f: f(xb)
        times = round_times_ms(fns, device)
        ms = {k: statistics.median(v) for k, v in times.items()}
        out[f"latency_dense_b{bsz}_ms_{tag}"] = ms["dense"]
        out[f"latency_rounds_b{bsz}_{tag}"] = float(len(times["dense"]))
        for g, cands in groups.items():
            best = min(cands, key=lambda c: ms[f"{g}/{c}"])
            info[f"{g}_format_b{bsz}_{tag}"] = best
            out[f"latency_{g}_b{bsz}_ms_{tag}"] = ms[f"{g}/{best}"]
            stats = ratio_quartiles(times["dense"], times[f"{g}/{best}"])
            out.update({f"latency_speedup_{g}_b{bsz}{q}_{tag}": v for q, v in zip(("", "_q25", "_q75"), stats)})
        if mc_samples:  # n forwards and n weight draws: timed on its own, not to slow the rounds above
            out[f"latency_mc_b{bsz}_ms_{tag}"] = medians_ms({"mc": lambda: model.predict_mc(xb, mc_samples)}, device)["mc"]
    out["size_csr_bytes_" + tag] = float(sizes[info[f"sparse_format_b1000_{tag}"]])
    return out, info
