"""Bayesian Compression with the group horseshoe prior (Louizos, Ullrich and Welling 2017, sec. 3.2):
per layer a global scale s ~ C+(0, tau0) and per group a local scale z~_j ~ C+(0, 1), the weight's
scale zeta_j = s z~_j (the non-centred parameterisation, eq. 9-10; w~ as in bc.py).

Each half-Cauchy is decomposed as C+(0, k) = sqrt(a b), a ~ Gamma(1/2, scale k^2), b ~ InvGamma(1/2,
scale 1) (eq. 11; a test checks the decomposition against the half-Cauchy's quantiles), and every one
of s_a, s_b, z_a, z_b has a log-normal posterior LN(mu, sigma^2) (eq. 12), whose KL to a Gamma and to
an inverse Gamma is closed form (below). Then log zeta_j ~ N(m_j, v_j) with
m_j = (mu_sa + mu_sb + mu_za_j + mu_zb_j) / 2 and v_j = (sigma^2 of the four) / 4: the scale is
log-normal, s shared by the layer's groups (one draw per layer and example, so the joint is exact).

Recipe: tau0 = 1e-5 (the paper, sec. 5: a small global scale puts more mass at zero), Adam 1e-3,
KL / N, log sigma^2 -9 everywhere, layer 1's sigma^2 of w~ clipped as for GNJ. Initialisation (the
authors' horseshoe code is not published): z~ = 1 (mu_za = mu_zb = 0), s_a at the prior's own scale
tau0^2 and s_b so that s = 1 / sqrt(fan_in), and w~ ~ U(-1, 1), so the effective weights start as
nn.Linear's.

Pruning: as GNJ, by the group's dropout rate. A log-normal zeta_j has Var[zeta_j] / E[zeta_j]^2 =
exp(v_j) - 1, so log alpha_j = log(exp(v_j) - 1) with v_j = Var[log zeta_j]: the noise of the scale,
not its size (the layer's s shifts every group of the layer alike). A group with log alpha_j >= its
layer's threshold is removed. The authors pick each threshold between the two clusters of the
distribution, by eye; the default -1 is the valley between them on LeNet-300-100 / MNIST (layer 1
has no clear gap; -1 keeps the dense net's accuracy there: CHANGELOG). E[log zeta_j], the size,
separates nothing: the unneeded groups stay near their initial z~ = 1, only their variance grows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import register
from .bc import BCParams, GroupScaled

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


@dataclass(frozen=True)
class GHSParams(BCParams):
    """The global scale's prior and the group thresholds of the horseshoe."""

    ghs_tau0: float = 1e-5
    """bc_ghs: scale of each layer's global half-Cauchy prior C+(0, tau0) (Louizos et al. 2017, sec. 5: 1e-5)."""
    ghs_thresholds: tuple[float, ...] = (-1.0,)
    """bc_ghs: a unit with log alpha = log(exp(Var[log s z~]) - 1) >= this is removed; one value, or one per layer."""

    def check(self, fail) -> None:
        super().check(fail)
        if not self.ghs_tau0 > 0:
            fail("ghs_tau0", self.ghs_tau0, "a scale > 0")


def kl_lognormal_gamma(mu: Tensor, log_var: Tensor, shape: float, scale: float) -> Tensor:
    """KL(LN(mu, sigma^2) || Gamma(shape, scale)) = -H[LN] - E[log p]: with E[log x] = mu and
    E[x] = e^(mu + sigma^2/2), -shape mu - log sigma - log sqrt(2 pi e) + E[x] / scale + lgamma(shape)
    + shape log scale."""
    return (-shape * mu - 0.5 * log_var - _HALF_LOG_2PI_E + torch.exp(mu + 0.5 * torch.exp(log_var)) / scale
            + math.lgamma(shape) + shape * math.log(scale))


def kl_lognormal_invgamma(mu: Tensor, log_var: Tensor, shape: float, scale: float) -> Tensor:
    """KL(LN(mu, sigma^2) || InvGamma(shape, scale)): with E[1/x] = e^(-mu + sigma^2/2),
    shape mu - log sigma - log sqrt(2 pi e) + scale E[1/x] + lgamma(shape) - shape log scale."""
    return (shape * mu - 0.5 * log_var - _HALF_LOG_2PI_E + scale * torch.exp(-mu + 0.5 * torch.exp(log_var))
            + math.lgamma(shape) - shape * math.log(scale))


@register
class GroupHorseshoe(GroupScaled):
    """Per layer: s_mu, s_log_var [L, 2] (columns s_a, s_b); per group: z_mu, z_log_var [G, 2] (z_a, z_b)."""

    name = "bc_ghs"
    Params = GHSParams
    # magnitude first, as bc_gnj: in the first 200-epoch run, weights ranked by their group's noise lose far
    # more at global levels (validation accuracy at 90 %: 0.52 against 0.98 by magnitude); unit_score("group")
    # is the group's own -log alpha (GroupScaled.unit_score)
    scores = ("magnitude", "group")
    thresholds_field = "ghs_thresholds"
    color = "#9edae5"
    order = 41.0

    @classmethod
    def label(cls, cfg) -> str:
        return "BC-GHS"

    def init_groups(self) -> None:
        fan_in = torch.tensor(self.sizes[:-1], dtype=torch.float32)
        with torch.no_grad():  # w~ ~ U(-1, 1): uniform_init times sqrt(fan_in)
            for seg in self.layout[::2]:
                self.mu[seg.start:seg.end] *= math.sqrt(self.sizes[seg.layer])
        a = torch.full_like(fan_in, 2 * math.log(self.p.ghs_tau0))
        self.s_mu = nn.Parameter(torch.stack([a, -torch.log(fan_in) - a], 1))  # s = sqrt(s_a s_b) = fan_in^-1/2
        self.s_log_var = nn.Parameter(torch.full((len(fan_in), 2), -9.0))
        self.z_mu = nn.Parameter(0.01 * torch.randn(self.n_groups, 2))
        self.z_log_var = nn.Parameter(-9.0 + 0.01 * torch.randn(self.n_groups, 2))
        sizes = torch.tensor(self.sizes[:-1])
        self.register_buffer("layer_of", torch.repeat_interleave(torch.arange(len(sizes)), sizes), persistent=False)

    def log_scale(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """log s ~ N(ms, vs) per layer [L], log z~ ~ N(mz, vz) per group [G]."""
        ms, vs = 0.5 * self.s_mu.sum(1), 0.25 * torch.exp(self.s_log_var).sum(1)
        mz, vz = 0.5 * self.z_mu.sum(1), 0.25 * torch.exp(self.z_log_var).sum(1)
        return ms, vs, mz, vz

    def mean_var(self) -> tuple[Tensor, Tensor]:
        """[G] m_j, v_j of log zeta_j = log s + log z~_j."""
        ms, vs, mz, vz = self.log_scale()
        return ms[self.layer_of] + mz, vs[self.layer_of] + vz

    def scale_sample(self, n: int) -> Tensor:
        """Per example: one log s per layer, shared by its groups (the joint is exact), one log z~ per group."""
        ms, vs, mz, vz = self.log_scale()
        log_s = ms + vs.sqrt() * torch.randn(n, len(ms), device=ms.device)
        return torch.exp(log_s[:, self.layer_of] + mz + vz.sqrt() * torch.randn(n, len(mz), device=mz.device))

    def scale_moments(self) -> tuple[Tensor, Tensor]:
        m, v = self.mean_var()
        return torch.exp(m + 0.5 * v), torch.exp(2 * m + 2 * v)

    def group_kl(self) -> Tensor:
        """Per layer KL(s_a || Gamma(1/2, tau0^2)) + KL(s_b || IG(1/2, 1)); per group the same with
        Gamma(1/2, 1) (eq. 11)."""
        sa, sb = self.s_mu.unbind(1)
        va, vb = self.s_log_var.unbind(1)
        za, zb = self.z_mu.unbind(1)
        wa, wb = self.z_log_var.unbind(1)
        return (kl_lognormal_gamma(sa, va, 0.5, self.p.ghs_tau0 ** 2).sum() + kl_lognormal_invgamma(sb, vb, 0.5, 1.0).sum()
                + kl_lognormal_gamma(za, wa, 0.5, 1.0).sum() + kl_lognormal_invgamma(zb, wb, 0.5, 1.0).sum())

    def log_alpha(self) -> Tensor:
        """[G] log alpha_j = log(exp(v_j) - 1), v_j = Var[log zeta_j] > 0 (module docstring)."""
        return torch.log(torch.expm1(self.mean_var()[1]))

    def group_score(self) -> Tensor:
        """-log alpha: the noisiest groups first."""
        return -self.log_alpha()

    def thresholds(self) -> tuple[float, ...]:
        """Kept when -log alpha > -threshold, i.e. log alpha below the threshold."""
        return tuple(-t for t in self.p.ghs_thresholds)
