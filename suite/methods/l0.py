"""L0 regularisation with hard-concrete gates (Louizos, Welling and Kingma 2018, "Learning Sparse
Neural Networks through L0 Regularization"): every weight is theta * z with a stochastic gate
z in [0, 1] whose distribution has an exact mass at 0, and the objective pays lambda for every gate
expected to be open. Gates close to exactly 0 during training: the method's natural sparsity.

Choices, and why:
- One gate per weight (unstructured), not per neuron as in the paper's MLP experiments: every level in
  this suite removes single weights, and the compression ratio is dense / nonzero weights. The
  paper's own per-weight form is its eq. 3-12 applied to each theta_j.
- beta = 2/3, gamma = -0.1, zeta = 1.1 (the paper's values, sec. 4); log alpha starts at
  log((1 - p) / p) + N(0, 0.01), p = l0_droprate_init (their code's initialisation).
- The penalty is lambda * sum_j P(z_j != 0) (eq. 12) divided by the training-set size N, as the
  paper's ELBO-like objective does, by riding the KL hook: with uniform KL weighting the loop adds
  weight 1/M per minibatch of B, i.e. penalty / (M B) = penalty / N. No L2 term (their code adds a
  weight decay; our weight_decay would also shrink log alpha).
- Biases carry no gate (and no penalty), as for Sparse VD.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register
from .base import KLParams, Method

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1   # temperature and stretch interval (Louizos et al. 2018, sec. 4)
_OPEN_SHIFT = BETA * math.log(-GAMMA / ZETA)  # P(z != 0) = sigmoid(log alpha - beta log(-gamma / zeta)), eq. 12


@dataclass(frozen=True)
class L0Params(KLParams):
    """The gate cost and initialisation of L0 regularisation."""

    kl_weighting: str = "uniform"
    """KL weight per minibatch i of M: uniform (1/M: the L0 penalty counted once per epoch) or blundell."""
    l0_lambda: float = 0.1
    """L0: cost of one open gate, in nats per training set (the penalty is l0_lambda x expected open gates / N)."""
    l0_droprate_init: float = 0.5
    """L0: initial probability that a gate is closed (log alpha starts at log((1 - p) / p))."""

    def check(self, fail) -> None:
        super().check(fail)
        if not self.l0_lambda >= 0:
            fail("l0_lambda", self.l0_lambda, "a number >= 0")
        if not 0.0 < self.l0_droprate_init < 1.0:
            fail("l0_droprate_init", self.l0_droprate_init, "a probability in (0, 1)")


def open_probability(log_alpha: Tensor) -> Tensor:
    """[P] P(z != 0) of the hard-concrete gates (Louizos et al. 2018, eq. 12)."""
    return torch.sigmoid(log_alpha - _OPEN_SHIFT)


def deterministic_gate(log_alpha: Tensor) -> Tensor:
    """[P] test-time gate min(1, max(0, sigmoid(log alpha) (zeta - gamma) + gamma)) (eq. 13): exactly 0
    where sigmoid(log alpha) < -gamma / (zeta - gamma), i.e. log alpha < -2.398."""
    return (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def sample_gate(log_alpha: Tensor) -> Tensor:
    """[P] one hard-concrete sample: u ~ U(0, 1), s = sigmoid((log u - log(1 - u) + log alpha) / beta),
    z = min(1, max(0, s (zeta - gamma) + gamma)) (eq. 10); differentiable in log alpha where 0 < z < 1.
    log(1 - u), not log1p: u is kept in [1e-6, 1 - 1e-6], where float32 1 - u loses nothing that
    matters, and log1p has no vector path on some x86 CPUs."""
    u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


@register
class L0(Method):
    """Flat weights theta [P] and gate parameters log alpha [P] (bias entries unused: biases are
    never gated); a forward pass reads theta * z."""

    name = "l0"
    Params = L0Params
    scores = ("magnitude", "gate")
    # unit_score: the default root mean square, as |theta z| and the open probability are >= 0
    has_kl = has_mc = has_natural = True
    color = "#e377c2"
    order = 30.0

    @classmethod
    def label(cls, cfg) -> str:
        return "L0"

    def init_parameters(self) -> None:
        p = self.p.l0_droprate_init
        self.theta = nn.Parameter(self.uniform_init())
        self.log_alpha = nn.Parameter(math.log((1 - p) / p) + 0.01 * torch.randn(self.n_params))
        self.register_buffer("is_weight", self.weight_entries(), persistent=False)

    def gated(self, gate: Tensor) -> Tensor:
        """[P] theta * gate on weights, theta on biases."""
        return self.theta * torch.where(self.is_weight, gate, 1.0)

    def point_weights(self) -> Tensor:
        """theta times the deterministic gate: the weights every level is evaluated (and measured) on."""
        return self.gated(deterministic_gate(self.log_alpha))

    def objective(self, x: Tensor, y: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per minibatch: NLL / B + kl_weight * lambda * E[open gates] / B (Louizos et al. 2018, eq. 3
        with the hard-concrete relaxation, one gate sample per minibatch). Held-pruned weights
        (theta = 0) leave the penalty."""
        in_l0 = self.is_weight if self.held is None else self.is_weight & self.held
        penalty = self.p.l0_lambda * (open_probability(self.log_alpha) * in_l0).sum()
        nll = F.cross_entropy(self(x, self.gated(sample_gate(self.log_alpha))), y)
        return nll + kl_weight * penalty / len(x), nll, kl_weight * penalty / len(x)

    @torch.no_grad()
    def sample(self) -> Tensor:
        """One weight sample [P]: theta * z with a sampled gate; pruned weights (theta = 0) stay 0."""
        return self.gated(sample_gate(self.log_alpha))

    def score(self, kind: str) -> Tensor:
        if kind == "gate":  # least likely to be open: pruned first
            return open_probability(self.log_alpha).detach()
        return super().score(kind)

    def natural_keep(self) -> Tensor:
        """Bool [P]: weights whose deterministic gate is open, and every bias."""
        return (deterministic_gate(self.log_alpha.detach()) > 0) | ~self.is_weight

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        self.theta.mul_(keep)
