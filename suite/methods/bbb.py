"""Bayes by Backprop (Blundell et al. 2015): a factorised Gaussian posterior N(mu, softplus(rho)^2)
over every weight, a scale-mixture prior, trained on the minibatch ELBO; pruned by the lowest
signal-to-noise ratio |mu| / sigma (Blundell et al. 2015, sec. 5.1)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import Prior, kl_kernels, sample_and_kl, softplus, weight_noise_key
from . import register
from .base import KLParams, Method


@dataclass(frozen=True)
class BBBParams(KLParams):
    """Prior and initialisation of Bayes by Backprop."""

    prior_pi: float = 0.5
    """BBB scale-mixture prior: weight of the wide component (Blundell et al. 2015, eq. 7)."""
    prior_sigma1: float = 1.0
    """BBB prior: std of the wide component (e^0)."""
    prior_sigma2: float = math.exp(-6)
    """BBB prior: std of the narrow component (e^-6)."""
    mu_init: float = 0.2
    """BBB: posterior means start U(-mu_init, mu_init) (the study's 0.2)."""
    rho_init: tuple[float, ...] = (-5.0, -4.0)
    """BBB: posterior rho (sigma = softplus(rho)) starts U(low, high) (the study's [-5, -4], sigma 0.007..0.018)."""

    def check(self, fail) -> None:
        super().check(fail)
        for name in ("prior_sigma1", "prior_sigma2", "mu_init"):
            if not getattr(self, name) > 0:
                fail(name, getattr(self, name), "a number > 0")
        if not 0.0 < self.prior_pi < 1.0:
            fail("prior_pi", self.prior_pi, "a weight in (0, 1)")
        if not self.prior_sigma2 < self.prior_sigma1:
            fail("prior_sigma2", self.prior_sigma2,
                 f"a std below prior_sigma1={self.prior_sigma1} (sigma2 is the narrow component)")
        # the fused KL forms e^(log of the narrow / wide density ratio at w = 0); kernels.py keeps it <= e^80
        if math.log((1 - self.prior_pi) * self.prior_sigma1 / (self.prior_pi * self.prior_sigma2)) > 80:
            fail("prior_sigma2", self.prior_sigma2, f"a std with log((1 - prior_pi) prior_sigma1 / (prior_pi "
                 f"prior_sigma2)) <= 80, i.e. >= {(1 - self.prior_pi) * self.prior_sigma1 / self.prior_pi * math.exp(-80):.3g}")
        if len(self.rho_init) != 2 or not self.rho_init[0] < self.rho_init[1]:
            fail("rho_init", list(self.rho_init), "[low, high] with low < high, e.g. [-5, -4]")


@register
class BBB(Method):
    """Flat posterior means mu [P] and rho [P]; sigma = softplus(rho)."""

    name = "bbb"
    Params = BBBParams
    scores = ("snr", "magnitude")
    # unit_score: the default root mean square, as SNR and |mu| are >= 0 (a unit of low SNR is mostly noise)
    has_kl = has_mc = compiled_kernels = True
    weight_noise = "threefry4x32-20"
    color = "#d62728"
    order = 10.0

    @classmethod
    def label(cls, cfg) -> str:
        return "BBB"

    def init_parameters(self) -> None:
        self.prior = Prior(self.p.prior_pi, self.p.prior_sigma1, self.p.prior_sigma2)
        self.train_samples, self.compiled = self.cfg.train_samples, self.cfg.compile
        a, (lo, hi) = self.p.mu_init, self.p.rho_init
        self.mu = nn.Parameter(torch.empty(self.n_params).uniform_(-a, a))
        self.rho = nn.Parameter(torch.empty(self.n_params).uniform_(lo, hi))

    def point_weights(self) -> Tensor:
        return self.mu

    def sigma(self) -> Tensor:
        return softplus(self.rho)

    @torch.no_grad()
    def weight_variance(self) -> Tensor:
        """[P] posterior variances sigma^2 = softplus(rho)^2 (0 for a pruned weight)."""
        return self.sigma() ** 2

    def objective(self, x: Tensor, y: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """Blundell eq. 8 per minibatch, divided by the batch size B so its scale matches the MLP's:
        loss = mean_s [ NLL_s / B + kl_weight * KL_s / B ] over train_samples weight samples s.
        While a pruning mask is held, only the kept weights are sampled and enter the KL (a pruned
        weight is the point mass at 0: no finite KL term)."""
        idx = None if self.held is None else self.held.nonzero().squeeze(1)
        mu, rho = (self.mu, self.rho) if idx is None else (self.mu[idx], self.rho[idx])
        nlls, kls = [], []
        for _ in range(self.train_samples):
            eps = kl_kernels(self.compiled)[2](mu.numel(), weight_noise_key(self.mu.device))
            w, kl_s = sample_and_kl(mu, rho, eps, self.prior, self.compiled)
            if idx is not None:
                w = torch.zeros_like(self.mu).index_copy(0, idx, w)  # [P], exact zeros where pruned
            nlls.append(F.cross_entropy(self(x, w), y))
            kls.append(kl_s)
        # one sample (the default) skips stack + mean: each scalar op is a node in forward and in
        # backward, a fixed cost per step that SGD does not pay
        nll, kl = (nlls[0], kls[0]) if len(nlls) == 1 else (torch.stack(nlls).mean(), torch.stack(kls).mean())
        kl = kl * (kl_weight / len(x))
        return nll + kl, nll, kl

    @torch.no_grad()
    def sample(self) -> Tensor:
        """One weight sample [P]; a pruned weight (mu = 0, sigma = 0) samples to exactly 0."""
        return torch.addcmul(self.mu, self.sigma(), torch.randn_like(self.mu))

    def score(self, kind: str) -> Tensor:
        if kind == "snr":  # signal-to-noise ratio |mu| / sigma (Blundell et al. 2015, sec. 5.1)
            return (self.mu.abs() / self.sigma()).detach()
        return super().score(kind)

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        """A pruned weight becomes the point mass at 0: mu = 0 and sigma = softplus(-inf) = 0 exactly."""
        self.mu.mul_(keep)
        self.rho.masked_fill_(~keep, float("-inf"))
