"""Inference of a 90 %-pruned 784-500-500-10 MLP: dense vs sparse forward (suite.evaluate.latency), and whether
concurrent trials' latency phases disturb each other without the node lock."""
from __future__ import annotations

import statistics

import torch

from .. import prune
from ..config import TrialConfig
from ..evaluate import latency
from ..methods import build as build_model


def pruned_mlp():
    """The suite's SGD model (seed 0), 90 % of its weights pruned by magnitude, globally."""
    torch.manual_seed(0)
    model = build_model(TrialConfig(method="sgd")).eval()
    keep, _ = prune.keep_mask(prune.scores(model, "magnitude", 0), prune.prunable(model, False), 0.9, "global", model)
    return prune.pruned_copy(model, keep)


def inference(x) -> dict[str, float | str]:
    """Dense and sparse latency at each of latency.BATCHES, and the sparse kernel that won."""
    m, info = latency.measure(pruned_mlp(), x[:1000], "p90")
    return {**{k: v for k, v in m.items() if k.startswith("latency")}, **info}


def _latency_worker(locked: bool, barrier, queue) -> None:
    """One 'trial' timing the pruned model with 1 thread, as a cpus-per-trial=1 trial would."""
    torch.set_num_threads(1)
    model, x = pruned_mlp(), torch.rand(1000, 784)
    barrier.wait()  # both start their latency phase at the same moment
    m, _ = latency.measure(model, x, "p90", lock=locked)
    queue.put({k: v for k, v in m.items() if k.startswith("latency")})


def isolation() -> dict[str, dict[str, float]]:
    """Median latency measured alone, by two concurrent trials without the node lock, and with it."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    out = {}
    for name, n, locked in (("alone", 1, True), ("2 at once, no lock", 2, False), ("2 at once, node lock", 2, True)):
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_latency_worker, args=(locked, barrier, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        out[name] = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return out
