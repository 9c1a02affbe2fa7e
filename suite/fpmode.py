"""The CPU's floating-point mode for training: subnormal ("denormal") floats flushed to zero.

Why: an Intel core handles an operation on a subnormal (|x| < 1.2e-38 in float32) in a microcode
assist, 100x or more slower than the normal path, and a fitted MLP makes them (gradients of confident
predictions underflow, and the matmuls carry them on), so training slows down as it converges
(docs/performance.md). Flushing changes only values below 1.2e-38, which no result here depends on.

FTZ/DAZ live in each thread's MXCSR register. torch.set_flush_denormal sets the calling thread's;
threads created afterwards inherit it, threads that already exist (torch's intra-op OpenMP pool,
once a parallel op has run) keep theirs. So this is called first thing in a process that trains
(a Ray trial worker, `python -m suite.trial`, the bench), and it checks every thread with a parallel op.
"""
from __future__ import annotations

import torch


def flush_denormals() -> bool:
    """Flush subnormals to zero on this thread (and threads created later); True if a parallel op
    then flushes on every thread of torch's pool, False if some thread still makes subnormals
    (its pool started earlier) or the CPU has no such mode (not x86 with SSE3)."""
    if not torch.set_flush_denormal(True):
        return False
    tiny = torch.full((1 << 20,), 1e-30) * 1e-10  # each element 1e-40: subnormal unless flushed
    return bool((tiny == 0).all())
