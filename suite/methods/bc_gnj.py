"""Bayesian Compression with the group normal-Jeffreys prior (Louizos, Ullrich and Welling 2017, sec.
3.1; "group variational dropout"): the log-uniform prior p(z) ~ 1/|z| on each group's scale, with
q(z_j) = N(mu_z, alpha_j mu_z^2) and q(w~ | z) as in bc.py. The KL of the scales is Molchanov et al.'s
approximation (2017, eq. 14) at log alpha_j = log sigma_z^2 - log mu_z^2 (Louizos et al., eq. 8); a
group with log alpha_j at or above its layer's threshold is removed, every weight of it.

Recipe: the authors' LeNet-300-100 code (their tutorial repository): Adam 1e-3, KL / N per example,
mu_z ~ N(1, 0.01^2), log sigma_z^2 and log sigma^2 ~ -9, sigma^2 of layer 1 clipped at 0.04, group
thresholds log alpha = -2.8, -3, -5 per layer (the paper, sec. 5: picked between the two clusters of
log alpha); no KL warm-up. Epochs and the lr schedule belong to the grids (the paper: 200 epochs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register
from .bc import BCParams, GroupScaled
from .sparse_vd import K1, K2, K3


@dataclass(frozen=True)
class GNJParams(BCParams):
    """The group thresholds of the normal-Jeffreys prior."""

    gnj_thresholds: tuple[float, ...] = (-2.8, -3.0, -5.0)
    """bc_gnj: an input unit with log alpha = log sigma_z^2 - log mu_z^2 >= this is removed; one value or one per layer."""


def gnj_kl(log_alpha: Tensor) -> Tensor:
    """Per group KL(q(z) || p(z)) ~= k1 - k1 sigmoid(k2 + k3 log alpha) + 0.5 softplus(-log alpha)
    (Molchanov et al. 2017, eq. 14), 0 as alpha -> inf. softplus, not log(1 + e^-x): no clip here."""
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


@register
class GroupNJ(GroupScaled):
    """Per group: mu_z [G] and log sigma_z^2 [G]."""

    name = "bc_gnj"
    Params = GNJParams
    # magnitude first: ranking single weights by their group's -log alpha loses far more at global levels
    # (first 200-epoch MNIST run, validation accuracy at 90 %: 0.60 against 0.98 by magnitude); whole units
    # go at the natural level, and unit_score("group") is the group's own -log alpha (GroupScaled.unit_score)
    scores = ("magnitude", "group")
    thresholds_field = "gnj_thresholds"
    color = "#bcbd22"
    order = 40.0

    @classmethod
    def label(cls, cfg) -> str:
        return "BC-GNJ"

    def init_groups(self) -> None:
        self.z_mu = nn.Parameter(1.0 + 0.01 * torch.randn(self.n_groups))
        self.z_log_var = nn.Parameter(-9.0 + 0.01 * torch.randn(self.n_groups))

    def log_alpha(self) -> Tensor:
        """[G] log alpha = log sigma_z^2 - log(mu_z^2 + 1e-8) (the 1e-8 keeps mu_z = 0 finite)."""
        return self.z_log_var - torch.log(self.z_mu * self.z_mu + 1e-8)

    def scale_sample(self, n: int) -> Tensor:
        return self.z_mu + torch.exp(0.5 * self.z_log_var) * torch.randn(n, self.n_groups, device=self.z_mu.device)

    def scale_moments(self) -> tuple[Tensor, Tensor]:
        return self.z_mu, self.z_mu * self.z_mu + torch.exp(self.z_log_var)

    def group_kl(self) -> Tensor:
        return gnj_kl(self.log_alpha()).sum()

    def group_score(self) -> Tensor:
        """-log alpha: the noisiest groups first."""
        return -self.log_alpha()

    def thresholds(self) -> tuple[float, ...]:
        """Kept when -log alpha >= -threshold, i.e. log alpha < the paper's threshold."""
        return tuple(-t for t in self.p.gnj_thresholds)
