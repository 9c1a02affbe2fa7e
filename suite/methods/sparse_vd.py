"""Sparse Variational Dropout (Molchanov, Ashukha and Vetrov 2017, "Variational Dropout Sparsifies
Deep Neural Networks"): a factorised Gaussian posterior N(theta, sigma^2) per weight under the
log-uniform prior, in the additive parameterisation (theta, log sigma^2) with
log alpha = log sigma^2 - log theta^2; weights with log alpha > 3 are dropped (its natural sparsity).

Recipe kept from the paper's code for LeNet-300-100: Adam 1e-3, batch 100, 200 epochs with the
learning rate decayed linearly to 0 over the last 100 (lr_decay_start 100), KL weight warmed up from
0 to 1 between epochs 5 and 20 (kl_warmup [5, 20]), uniform KL weighting (the ELBO's KL counted once
per epoch), log sigma^2 initialised at -10, log alpha clipped to [-8, 8]. The defaults are the
paper's lr 1e-3 and warm-up [5, 20] (with the common lr 1e-4 and no warm-up the KL pushes every weight to
the prior before the data term is fitted: a 20k-example subset trained to chance); the epoch budget and
lr decay are the grid's (suite/grids/lenet.yaml).
Biases are deterministic (no variance, no KL), as in the paper's fully connected layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import compile_kernel, exp32, log32
from . import register
from .base import KLParams, Method

# -KL(q || log-uniform prior) ~= k1 sigmoid(k2 + k3 log alpha) - 0.5 log1p(e^-log alpha) - k1
# (Molchanov et al. 2017, eq. 14; maximum absolute error about 0.009 according to the paper).
K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_CLIP = 8.0


@dataclass(frozen=True)
class SparseVDParams(KLParams):
    """Sparse VD's prior weighting, initialisation and threshold."""

    kl_weighting: str = "uniform"
    """KL weight per minibatch i of M: uniform (1/M, the ELBO of Molchanov et al.) or blundell (2^(M-i)/(2^M-1))."""
    kl_warmup: tuple[int, ...] = (5, 20)
    """KL warm-up [a, b]: KL weight x 0 up to epoch a, linear to 1 at epoch b (Molchanov et al.: [5, 20]); [] = none."""
    log_sigma2_init: float = -10.0
    """Sparse VD: initial log sigma^2 of every weight (Molchanov et al.'s code: -10)."""
    threshold: float = 3.0
    """Sparse VD: weights with log alpha above this are set to zero at evaluation (the paper's 3)."""

    def check(self, fail) -> None:
        super().check(fail)
        if not -LOG_ALPHA_CLIP < self.threshold < LOG_ALPHA_CLIP:
            fail("threshold", self.threshold, f"a log alpha inside the clip range (-{LOG_ALPHA_CLIP:g}, {LOG_ALPHA_CLIP:g})")


def neg_kl_approx(log_alpha: Tensor) -> Tensor:
    """Elementwise -KL(q(w) || p(w)) of the log-uniform prior (Molchanov et al. 2017, eq. 14), for
    log alpha clipped to [-8, 8]. log1p(e^-x) is written log(1 + e^-x): log1p is slow on some x86
    CPUs, and within the clip range (e^-x >= 3e-4) the rounding of 1 + e^-x costs at most 6e-8 in
    absolute terms, far below the approximation's own 0.009."""
    return K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * torch.log(1 + torch.exp(-log_alpha)) - K1


def _vd_forward(theta: Tensor, log_sigma2: Tensor, in_kl: Tensor):
    """The per-weight work of one step over the flat [P] vectors: weight variances alpha theta^2 (from
    the clipped log alpha; 0 where in_kl is False: biases and held-pruned weights), the KL summed over
    in_kl, and what the backward needs. Transcendentals: one exp, t = e^-|la|, gives alpha, softplus(-la)
    and sigmoid(-la); a second exp gives the KL's sigmoid; two logs. exp32 and log32 are inlined and
    vectorised under torch.compile (torch's own in eager mode). `live` is returned as a float 0/1
    mask, not a bool: inductor's CPU code stores a bool output slowly (docs/performance.md)."""
    t2 = theta * theta
    raw = log_sigma2 - log32(t2 + 1e-8)
    la = raw.clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)  # so both exp32 arguments below give normal floats
    live = (in_kl & (raw >= -LOG_ALPHA_CLIP) & (raw <= LOG_ALPHA_CLIP)).to(theta.dtype)  # la moves with its inputs
    t = exp32(-la.abs(), normal=True)
    alpha = torch.where(la < 0, t, 1 / t)
    sp = (-la).clamp_min(0) + log32(1 + t)               # softplus(-la); 1 + t in (1, 2]
    sg = torch.where(la < 0, 1.0, t) / (1 + t)           # sigmoid(-la)
    s1 = 1 / (1 + exp32(-(K2 + K3 * la), normal=True))   # sigmoid; the argument is in [-13.8, 10.0]
    var = torch.where(in_kl, alpha * t2, 0.0)
    kl = torch.where(in_kl, K1 - K1 * s1 + 0.5 * sp, 0.0).sum()
    dkl_dla = -(K1 * K3) * s1 * (1 - s1) - 0.5 * sg      # d(per-weight KL)/d la
    return var, kl, alpha, dkl_dla, live


def _vd_backward(g_var: Tensor, g_kl: Tensor, theta: Tensor, var: Tensor, alpha: Tensor, dkl_dla: Tensor,
                 live: Tensor, in_kl: Tensor):
    """Gradients w.r.t. (theta, log sigma^2), by hand. la = log sigma^2 - log(theta^2 + eps), eps = 1e-8:
    d la / d log sigma^2 = 1 and d la / d theta = -2 theta / (theta^2 + eps) where la is not clipped
    (`live` > 0), 0 where it is. var = e^la theta^2, so d var / d theta = 2 theta e^la eps / (theta^2 + eps)
    where live (the two paths through theta cancel up to eps: written in closed form, because float32
    autograd loses that difference to rounding) and 2 theta e^la where clipped."""
    eps = 1e-8
    r = 1 / (theta * theta + eps)
    on = live > 0
    g_ls = torch.where(on, g_var * var + g_kl * dkl_dla, 0.0)
    g_theta = 2 * theta * (g_var * alpha * torch.where(on, eps * r, 1.0) - torch.where(on, g_kl * dkl_dla * r, 0.0))
    return torch.where(in_kl, g_theta, 0.0), g_ls


# ~30 elementwise passes over every weight each way: torch.compile fuses each function into one loop.
# The eager path computes the same formulas (torch's exp and log in place of the inlined ones), so
# `compile` never changes a result beyond float rounding.
_TERMS = {False: (_vd_forward, _vd_backward)}


def vd_kernels(compiled: bool):
    if compiled not in _TERMS:
        _TERMS[True] = tuple(compile_kernel(f, dynamic=False) for f in _TERMS[False])
    return _TERMS[compiled]


class _VDTerms(torch.autograd.Function):
    """Autograd wrapper: (theta, log sigma^2) -> (weight variances [P], KL)."""

    @staticmethod
    def forward(ctx, theta: Tensor, log_sigma2: Tensor, in_kl: Tensor, compiled: bool):
        fwd, ctx.bwd = vd_kernels(compiled)
        var, kl, alpha, dkl_dla, live = fwd(theta, log_sigma2, in_kl)
        ctx.save_for_backward(theta, var, alpha, dkl_dla, live, in_kl)
        return var, kl

    @staticmethod
    def backward(ctx, g_var: Tensor, g_kl: Tensor):
        return *ctx.bwd(g_var, g_kl, *ctx.saved_tensors), None, None


def vd_terms(theta: Tensor, log_sigma2: Tensor, in_kl: Tensor, compiled: bool = False) -> tuple[Tensor, Tensor]:
    """Weight variances [P] and the summed KL; differentiable in theta and log sigma^2."""
    return _VDTerms.apply(theta, log_sigma2, in_kl, compiled)


@register
class SparseVD(Method):
    """Flat theta [P] and log sigma^2 [P] (bias entries unused); training uses the local
    reparameterisation trick, evaluation the thresholded theta."""

    name = "sparse_vd"
    Params = SparseVDParams
    scores = ("log_alpha", "magnitude")
    has_kl = has_mc = has_natural = compiled_kernels = True
    color = "#8c564b"
    order = 20.0
    field_defaults = {"lr": 1e-3}  # Molchanov et al.'s Adam 1e-3

    @classmethod
    def label(cls, cfg) -> str:
        return "Sparse VD"

    def init_parameters(self) -> None:
        self.theta = nn.Parameter(self.uniform_init())
        self.log_sigma2 = nn.Parameter(torch.full((self.n_params,), self.p.log_sigma2_init))
        self.register_buffer("is_weight", self.weight_entries(), persistent=False)

    def point_weights(self) -> Tensor:
        return self.theta

    def log_alpha(self) -> Tensor:
        """[P] clipped log alpha = log sigma^2 - log theta^2 (theta^2 + 1e-8 keeps it finite at theta = 0)."""
        return (self.log_sigma2 - torch.log(self.theta * self.theta + 1e-8)).clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)

    def variance(self, log_alpha: Tensor) -> Tensor:
        """[P] weight variances alpha theta^2 (from the clipped log alpha, as the paper's code does),
        0 for biases, and exactly 0 for a pruned weight (theta = 0)."""
        return torch.where(self.is_weight, torch.exp(log_alpha) * self.theta * self.theta, 0.0)

    @torch.no_grad()
    def weight_variance(self) -> Tensor:
        """[P] posterior variances alpha theta^2 of the weights (variance), 0 for biases and pruned weights."""
        return self.variance(self.log_alpha())

    def objective(self, x: Tensor, y: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per minibatch: NLL / B + kl_weight * KL / B, the ELBO scaled like BBB's (Molchanov et al.
        2017, eq. 3 with the SGVB estimator and local reparameterisation). A held-pruned weight
        (theta = 0 exactly) has variance 0 and leaves the KL."""
        in_kl = self.is_weight if self.held is None else self.is_weight & self.held
        var, kl = vd_terms(self.theta, self.log_sigma2, in_kl, self.cfg.compile)
        nll = F.cross_entropy(self(x, self.theta, var), y)
        return nll + kl_weight * kl / len(x), nll, kl_weight * kl / len(x)

    @torch.no_grad()
    def sample(self) -> Tensor:
        """One weight sample [P]: theta + sqrt(alpha) |theta| eps; pruned weights (theta = 0) stay 0."""
        return self.theta + self.variance(self.log_alpha()).sqrt() * torch.randn_like(self.theta)

    def score(self, kind: str) -> Tensor:
        if kind == "log_alpha":  # high log alpha = mostly noise: pruned first (score -log alpha)
            return -self.log_alpha().detach()
        return super().score(kind)

    def unit_score(self, kind: str) -> Tensor:
        if kind == "log_alpha":  # -log alpha < 0 for noisy weights: the mean (-log of alpha's geometric mean), not an RMS
            return self.reduce_units(self.score(kind).float(), "mean", self.held)
        return super().unit_score(kind)

    def natural_keep(self) -> Tensor:
        """Bool [P]: weights with log alpha <= threshold, and every bias."""
        return (self.log_alpha().detach() <= self.p.threshold) | ~self.is_weight

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        self.theta.mul_(keep)
