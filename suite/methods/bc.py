"""Bayesian Compression (Louizos, Ullrich and Welling 2017, "Bayesian Compression for Deep Learning"):
what its two methods share. Every weight is a per-group scale times a Gaussian weight,

    w_ij = zeta_j * w~_ij,   q(w~_ij) = N(mu_ij, sigma_ij^2),   prior p(w~_ij) = N(0, 1)  (sec. 3, eq. 5)

with one scale per group j = an input unit of a layer (a pixel of layer 1, a hidden unit feeding the
next layer), so a group whose scale the prior shrinks away removes a whole unit. bc_gnj.py (normal-
Jeffreys, zeta ~ N(mu_z, alpha mu_z^2)) and bc_ghs.py (horseshoe, zeta = s z~ log-normal) supply the
scale's posterior: a sample, its first two moments, its KL and which groups it keeps.

Training: as the authors' code, one scale sample per example and group, applied to the layer's
inputs (x_j zeta_j: the multiplicative noise of group variational dropout), then the Gaussian w~
given it by the local reparameterisation trick (mean (x zeta) mu, variance (x zeta)^2 sigma^2, exact
given zeta), all through the suite's one forward pass: an unbiased estimate of the ELBO whose noise is
independent across the examples of a minibatch (one draw per minibatch, as this suite first did,
shares it: higher-variance gradients).
Biases are deterministic (no variance, no KL), as for Sparse VD; the KL of w~ given the scale is
sum_ij 0.5 (sigma^2 + mu^2 - 1 - log sigma^2) for both priors (eq. 8: N(z mu, z^2 sigma^2) against
N(0, z^2) cancels z).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import KLParams, Method


@dataclass(frozen=True)
class BCParams(KLParams):
    """The settings both Bayesian Compression methods share; each adds its prior's and its thresholds."""

    kl_weighting: str = "uniform"
    """KL weight per minibatch i of M: uniform (1/M: the ELBO's KL once per epoch, the authors' code) or blundell."""
    bc_log_sigma2_init: float = -9.0
    """Bayesian Compression: initial log sigma^2 of every weight's Gaussian factor (the authors' code: -9)."""
    bc_clip_var: float = 0.04
    """Bayesian Compression: layer 1's weight sigma^2 is clipped at this after every step (authors' code: 0.04); 0 = none."""

    def check(self, fail) -> None:
        super().check(fail)
        if not self.bc_clip_var >= 0:
            fail("bc_clip_var", self.bc_clip_var, "a variance >= 0 (0: no clip)")


def group_thresholds(thresholds: tuple[float, ...], n_layers: int) -> list[float]:
    """One threshold per layer: a single value for every layer, else one per layer."""
    return list(thresholds) * n_layers if len(thresholds) == 1 else list(thresholds)


class GroupScaled(Method):
    """Flat mu [P] and log sigma^2 [P] of w~ (bias entries: the deterministic bias; their log sigma^2
    unused), plus the subclass's per-group scale parameters ([G] tensors, G = sum of the layers' input
    widths). A pruned weight has mu = 0 and sigma = 0 (log sigma^2 = -inf), so it samples to exactly 0."""

    has_kl = has_mc = has_natural = True
    field_defaults = {"lr": 1e-3}  # the authors' code: Adam at its default 1e-3

    # -- what the prior's subclass supplies, all over groups [G]
    def scale_sample(self, n: int) -> Tensor:
        """[n, G]: n independent differentiable samples of every group's scale zeta."""
        raise NotImplementedError

    def scale_moments(self) -> tuple[Tensor, Tensor]:
        """(E[zeta], E[zeta^2]) under q."""
        raise NotImplementedError

    def group_kl(self) -> Tensor:
        """KL(q || p) of the scale variables (a scalar)."""
        raise NotImplementedError

    def group_score(self) -> Tensor:
        """Per group, lower = less needed (pruned first); group_keep thresholds it per layer."""
        raise NotImplementedError

    # -- layout
    thresholds_field: str  # the Params field of the per-layer group thresholds

    def thresholds(self) -> tuple[float, ...]:
        return getattr(self.p, self.thresholds_field)

    @classmethod
    def check(cls, cfg, fail) -> None:
        n, t = len(cfg.hidden) + 1, getattr(cfg.params, cls.thresholds_field)
        if len(t) not in (1, n):
            fail(cls.thresholds_field, list(t), f"one value, or one per layer ({n} with hidden={list(cfg.hidden)})")

    def init_parameters(self) -> None:
        self.mu = nn.Parameter(self.uniform_init())
        self.log_sigma2 = nn.Parameter(torch.full((self.n_params,), self.p.bc_log_sigma2_init))
        self.register_buffer("is_weight", self.weight_entries(), persistent=False)
        first = torch.zeros(self.n_params, dtype=torch.bool)
        first[self.layout[0].start:self.layout[0].end] = True
        self.register_buffer("first_layer", first, persistent=False)
        self.init_groups()

    def init_groups(self) -> None:
        raise NotImplementedError

    # -- training
    def objective(self, x: Tensor, y: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """NLL / B + kl_weight * (KL of the scales + KL of w~ given them) / B, the ELBO scaled like the
        other methods' (with uniform weighting, KL / N per example, as the authors' code). A
        held-pruned weight (mu = 0, sigma = 0) leaves the KL of w~."""
        in_kl = self.is_weight if self.held is None else self.is_weight & self.held
        var = torch.where(in_kl, torch.exp(self.log_sigma2), 0.0)
        nll = F.cross_entropy(self(x, self.mu, var, scale=self.scale_sample(len(x))), y)
        ls = self.log_sigma2
        kl_w = torch.where(in_kl, 0.5 * (torch.exp(ls) + self.mu * self.mu - 1.0 - ls), 0.0).sum()
        kl = (self.group_kl() + kl_w) * (kl_weight / len(x))
        return nll + kl, nll, kl

    @torch.no_grad()
    def after_step(self) -> None:
        """sigma^2 of layer 1's w~ clipped at clip_var (the authors' LeNet-300-100 code: 0.04; the paper's
        sec. 5 'constraining the standard deviations' against bad local optima); 0 = no clip."""
        if self.p.bc_clip_var > 0:
            cap = math.log(self.p.bc_clip_var)
            self.log_sigma2.masked_fill_(self.first_layer & (self.log_sigma2 > cap), cap)

    # -- prediction
    def point_weights(self) -> Tensor:
        """The posterior mean of every effective weight, E[zeta] mu; the bias as it is."""
        return self.per_weight(self.scale_moments()[0], 1.0) * self.mu

    @torch.no_grad()
    def weight_variance(self) -> Tensor:
        """Var[zeta w~] = E[zeta^2] (mu^2 + sigma^2) - E[zeta]^2 mu^2 per weight (zeta and w~ independent
        under q; the paper's sec. 4 reads the bit precision off it); 0 for biases and pruned weights."""
        m1, m2 = (self.per_weight(t, 0.0) for t in self.scale_moments())
        mu2 = self.mu * self.mu
        return torch.where(self.is_weight, m2 * (mu2 + torch.exp(self.log_sigma2)) - m1 * m1 * mu2, 0.0).clamp_min(0.0)

    @torch.no_grad()
    def sample(self) -> Tensor:
        """One joint sample: zeta ~ q per group, w~ ~ N(mu, sigma^2); pruned weights stay exactly 0."""
        sigma = torch.where(self.is_weight, torch.exp(0.5 * self.log_sigma2), 0.0)
        return self.per_weight(self.scale_sample(1)[0], 1.0) * (self.mu + sigma * torch.randn_like(self.mu))

    # -- pruning
    def group_keep(self) -> Tensor:
        """Bool [G]: groups whose score is above their layer's threshold."""
        score = self.group_score().detach()
        keep = torch.ones_like(score, dtype=torch.bool)
        for sl, t in zip(self.group_slices(), group_thresholds(self.thresholds(), len(self.sizes) - 1)):
            keep[sl] = score[sl] > t
        return keep

    def natural_keep(self) -> Tensor:
        """Bool [P]: the weights of the kept groups (Method.units_keep: a unit nothing reads loses its
        inputs too, the authors' masks); every bias is kept."""
        return self.units_keep(self.group_keep()) | ~self.is_weight

    def score(self, kind: str) -> Tensor:
        if kind == "group":  # every weight of a group scores as its group; biases last
            return self.per_weight(self.group_score().detach(), float("inf"))
        return super().score(kind)

    def unit_score(self, kind: str) -> Tensor:
        if kind == "group":  # the prior's own per-group score (it may be negative: never a root mean square)
            return self.group_score().detach()
        return super().unit_score(kind)

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        """A pruned weight becomes the point mass at 0: mu = 0 and sigma = 0 (log sigma^2 = -inf)."""
        self.mu.mul_(keep)
        self.log_sigma2.masked_fill_(~keep & self.is_weight, float("-inf"))


