"""Per-kernel breakdown: where one training step's time goes, per method, on this CPU. Each kernel of
our SGD, BBB and Sparse VD steps is timed alone (compiled as trials run them), beside plain eager
exp / log / log1p passes over the same number of floats: a kernel's cost as a multiple of an exp pass
carries over between machines, and an elementwise kernel far above it points at a slow vector path."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import kernels
from ..config import TrialConfig
from ..methods import build as build_model
from ..methods import sparse_vd
from .race import race
from .steps import HIDDEN, B, ours_model, train_step

Kernel = tuple[str, str, Callable[[], object]]  # (method, kernel, callable timing that kernel alone)
FLAG_X_EXP = 8.0  # an elementwise kernel costing more than this many exp passes is flagged
NOT_ELEMENTWISE = ("step", "matmuls fwd", "matmuls bwd", "other")


def _ours_parts(method: str, x, y, hidden: tuple[int, ...]):
    """Model and optimiser as trials build them (compiled, 1 sample), with gradients set by one real
    step, a fixed batch, and the full training step on that same model."""
    model, opt = ours_model(method, hidden=hidden)
    step = train_step(model, opt, x, y)
    step()
    return model, opt, x[:B], y[:B], step


def _matmuls(model, xb, yb, flat: Tensor) -> list[tuple[str, Callable[[], object]]]:
    """The 3 linear layers + cross-entropy from flat weights, forward alone and backward alone."""
    leaf = flat.detach().requires_grad_()
    nll = F.cross_entropy(model(xb, leaf), yb)
    return [("matmuls fwd", lambda: F.cross_entropy(model(xb, leaf), yb)),
            ("matmuls bwd", lambda: torch.autograd.grad(nll, leaf, retain_graph=True))]


def sgd_kernels(x, y, hidden: tuple[int, ...] = HIDDEN) -> list[Kernel]:
    model, opt, xb, yb, step = _ours_parts("sgd", x, y, hidden)
    parts = [*_matmuls(model, xb, yb, model.theta), ("optimizer", opt.step), ("step", step)]
    return [("SGD", k, f) for k, f in parts]


def bbb_kernels(x, y, hidden: tuple[int, ...] = HIDDEN) -> list[Kernel]:
    """BBB's step in its kernels: weight noise, fused sample + KL forward and backward, the matmuls on
    the sampled weights, Adam over mu and rho."""
    model, opt, xb, yb, step = _ours_parts("bbb", x, y, hidden)
    fwd, bwd, noise = kernels.kl_kernels(True)
    mu, rho, n = model.mu.detach(), model.rho.detach(), model.n_params
    key = kernels.weight_noise_key(mu.device)
    consts = model.prior.kl_constants()
    eps = noise(n, key)
    with torch.no_grad():
        w, kl, *saved = fwd(mu, rho, eps, *consts)
    g_w, g_kl = torch.randn_like(w), torch.ones(())
    no_grad = torch.no_grad()  # as inside the autograd.Function, so the compiled kernels are reused, not recompiled
    parts = [("noise", lambda: noise(n, key)), ("sample+KL fwd", no_grad(lambda: fwd(mu, rho, eps, *consts))),
             ("sample+KL bwd", no_grad(lambda: bwd(g_w, g_kl, *saved))), *_matmuls(model, xb, yb, w),
             ("optimizer", opt.step), ("step", step)]
    return [("BBB", k, f) for k, f in parts]


def svd_kernels(x, y, hidden: tuple[int, ...] = HIDDEN) -> list[Kernel]:
    """Sparse VD's step in its kernels: the fused per-weight terms (variance, KL) forward and backward,
    the matmuls with local reparameterisation, Adam over theta and log sigma^2."""
    model, opt, xb, yb, step = _ours_parts("sparse_vd", x, y, hidden)
    fwd, bwd = sparse_vd.vd_kernels(True)
    theta, ls, in_kl = model.theta.detach(), model.log_sigma2.detach(), model.is_weight
    with torch.no_grad():
        var, kl, *saved = fwd(theta, ls, in_kl)
    g_var, g_kl = torch.randn_like(var), torch.ones(())
    # both leaves, as in training: the backward then holds the variance product's weight gradient too
    leaves = theta.clone().requires_grad_(), var.clone().requires_grad_()
    nll = F.cross_entropy(model(xb, *leaves), yb)
    no_grad = torch.no_grad()
    parts = [("terms fwd", no_grad(lambda: fwd(theta, ls, in_kl))),
             ("terms bwd", no_grad(lambda: bwd(g_var, g_kl, theta, var, *saved, in_kl))),
             ("matmuls fwd", lambda: F.cross_entropy(model(xb, *leaves), yb)),
             ("matmuls bwd", lambda: torch.autograd.grad(nll, leaves, retain_graph=True)),
             ("optimizer", opt.step), ("step", step)]
    return [("Sparse VD", k, f) for k, f in parts]


def reference_passes(n: int) -> list[Kernel]:
    """Plain eager elementwise passes over n floats, the yardstick the kernels are measured against."""
    v = torch.rand(n) + 0.5
    return [("ref", f"{op} pass", lambda op=op: getattr(torch, op)(v)) for op in ("exp", "log", "log1p")]


def breakdown(x, y, rounds: int, steps: int,
              hidden: tuple[int, ...] = HIDDEN) -> dict[str, dict[str, dict[str, float | None]]]:
    """{method: {kernel: {ms, share, x_exp}}}: median ms of each kernel (interleaved rounds), its share
    of the method's step, and how many plain exp passes over the same number of floats it costs, for
    hidden layers of widths `hidden`. "other" is the step minus its kernels (batch gather, autograd,
    zero_grad)."""
    n = build_model(TrialConfig(method="sgd", hidden=hidden)).n_params
    table = [*sgd_kernels(x, y, hidden), *bbb_kernels(x, y, hidden), *svd_kernels(x, y, hidden), *reference_passes(n)]
    ms = race({f"{m}/{k}": f for m, k, f in table}, rounds, steps, warmup=5)
    ms = {(m, k): t for (m, _, k), t in ((key.partition("/"), t) for key, t in ms.items())}
    methods = {m: [k for m2, k, _ in table if m2 == m and k != "step"] for m, _, _ in table}
    for m, ks in methods.items():
        if (m, "step") in ms:
            ms[m, "other"] = ms[m, "step"] - sum(ms[m, k] for k in ks)
            ks += ["other", "step"]

    def row(m, k):
        return {"ms": ms[m, k], "share": ms[m, k] / ms[m, "step"] if (m, "step") in ms else None,
                "x_exp": ms[m, k] / ms["ref", "exp pass"]}
    return {m: {k: row(m, k) for k in ks} for m, ks in methods.items()}


def flagged(bd: dict[str, dict[str, dict]]) -> list[str]:
    """The elementwise kernels costing more than FLAG_X_EXP exp passes, as 'method/kernel'."""
    return [f"{m}/{k}" for m, parts in bd.items() for k, v in parts.items()
            if k not in NOT_ELEMENTWISE and v["x_exp"] > FLAG_X_EXP]


def print_breakdown(bd: dict[str, dict[str, dict]], cpu: dict[str, object]) -> list[str]:
    """Print the per-kernel table; returns the flagged kernels."""
    slow = flagged(bd)
    print(f"\nper-kernel breakdown on {cpu['cpu_model']} ({cpu['vector_isa']}, avx512f={cpu['avx512f']}, "
          f"{cpu['threads']} threads), median ms")
    print(f"{'method':7} {'kernel':16} {'ms':>8} {'% of step':>10} {'x exp pass':>11}")
    for m, parts in bd.items():
        for k, v in parts.items():
            share = f"{100 * v['share']:9.1f}%" if v["share"] is not None else f"{'':10}"
            print(f"{m:7} {k:16} {v['ms']:8.3f} {share} {v['x_exp']:11.1f}"
                  + ("  <-- slow" if f"{m}/{k}" in slow else ""))
    if slow:
        print(f"  flagged (> {FLAG_X_EXP:g} exp passes): {', '.join(slow)}")
    return slow
