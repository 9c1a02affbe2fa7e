"""The two models: a (dropout) MLP and its Bayes-by-Backprop twin, behind one interface.

All weights and biases of a model live in ONE flat vector (theta for the MLP; mu and rho for BBB),
and each layer reads a view of it. Why: sampling, the KL and Adam then each run as one vectorised
pass over ~650k numbers instead of 6 small ones, and pruning is one mask over one vector that the
forward pass provably reads (there is no second copy of a weight to forget, the bug of the original
study, see DESIGN.md).

Layout of the flat vector for sizes [784, 500, 500, 10]:
  [W1 (500x784), b1 (500), W2 (500x500), b2 (500), W3 (10x500), b3 (10)]  -> 648,010 numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import Prior, kl_kernels, sample_and_kl, softplus, weight_noise_key


@dataclass(frozen=True)
class Segment:
    """One weight matrix or bias vector inside the flat parameter vector."""

    layer: int
    is_bias: bool
    start: int
    shape: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.start + math.prod(self.shape)


def make_layout(sizes: list[int]) -> list[Segment]:
    segs, pos = [], 0
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for is_bias, shape in ((False, (n_out, n_in)), (True, (n_out,))):
            segs.append(Segment(i, is_bias, pos, shape))
            pos += math.prod(shape)
    return segs


class MLP(nn.Module):
    """784-hidden-10 ReLU MLP with dropout; deterministic weights theta (SGD / Dropout baselines)."""

    def __init__(self, sizes: list[int], dropout: float = 0.0, input_dropout: bool = False):
        super().__init__()
        self.sizes, self.dropout, self.input_dropout = list(sizes), dropout, input_dropout
        self.layout = make_layout(self.sizes)
        self.n_params = self.layout[-1].end
        self.init_parameters()

    def init_parameters(self) -> None:
        # nn.Linear's default: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        flat = torch.empty(self.n_params)
        for s in self.layout:
            bound = 1.0 / math.sqrt(self.sizes[s.layer])
            flat[s.start:s.end].uniform_(-bound, bound)
        self.theta = nn.Parameter(flat)

    # -- the one forward pass every method and every metric uses
    def forward(self, x: Tensor, flat: Tensor | None = None) -> Tensor:
        """x: [B, 784] -> logits [B, 10], computed from `flat` (default: the point estimate)."""
        flat = self.point_weights() if flat is None else flat
        # split (not slicing) so backward is a single concatenation of the gradients.
        parts = flat.split([math.prod(s.shape) for s in self.layout])
        h = x
        if self.input_dropout and self.dropout > 0:
            h = F.dropout(h, self.dropout, self.training)
        n_layers = len(self.sizes) - 1
        for i in range(n_layers):
            w, b = parts[2 * i].view(self.layout[2 * i].shape), parts[2 * i + 1]
            h = F.linear(h, w, b)
            if i < n_layers - 1:
                h = F.dropout(F.relu(h), self.dropout, self.training) if self.dropout > 0 else F.relu(h)
        return h

    def point_weights(self) -> Tensor:
        """The flat [P] weights of a deterministic prediction (theta; the posterior mean for BBB)."""
        return self.theta

    def objective(self, x: Tensor, y: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """(loss, nll, kl) per example for one minibatch; plain cross-entropy here, no KL."""
        nll = F.cross_entropy(self(x), y)
        return nll, nll, None

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities [N, 10] (eval mode: no dropout)."""
        return torch.softmax(self(x), dim=-1)

    def importance(self, kind: str) -> Tensor:
        """Flat [P] pruning score; lower = pruned first."""
        if kind == "magnitude":
            return self.point_weights().detach().abs()
        raise ValueError(f"pruner {kind!r} needs a Bayesian model")

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        """Zero the pruned entries (keep: bool [P]) in the tensor the forward pass reads."""
        self.theta.mul_(keep)


class BayesMLP(MLP):
    """Bayes by Backprop (Blundell et al. 2015): factorised Gaussian posterior N(mu, softplus(rho)^2)."""

    def __init__(self, sizes: list[int], prior: Prior, train_samples: int = 1, compiled: bool = False):
        super().__init__(sizes)  # no dropout: the posterior is the regulariser
        self.prior, self.train_samples, self.compiled = prior, train_samples, compiled

    def init_parameters(self) -> None:
        # as in the study: mu ~ U(-0.2, 0.2), rho ~ U(-5, -4)  (sigma ~ 0.007..0.018)
        self.mu = nn.Parameter(torch.empty(self.n_params).uniform_(-0.2, 0.2))
        self.rho = nn.Parameter(torch.empty(self.n_params).uniform_(-5.0, -4.0))

    def point_weights(self) -> Tensor:
        return self.mu

    def sigma(self) -> Tensor:
        return softplus(self.rho)

    def objective(self, x: Tensor, y: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """Blundell eq. 8 per minibatch, divided by the batch size B so its scale matches the MLP's:
        loss = mean_s [ NLL_s / B + kl_weight * KL_s / B ] over train_samples weight samples s."""
        nll = kl = 0.0
        for _ in range(self.train_samples):
            eps = kl_kernels(self.compiled)[2](self.n_params, weight_noise_key(self.mu.device))
            w, kl_s = sample_and_kl(self.mu, self.rho, eps, self.prior, self.compiled)
            nll = nll + F.cross_entropy(self(x, w), y)
            kl = kl + kl_s
        nll, kl = nll / self.train_samples, kl_weight * kl / (self.train_samples * len(x))
        return nll + kl, nll, kl

    @torch.no_grad()
    def sample(self) -> Tensor:
        """One weight sample [P]; a pruned weight (mu = 0, sigma = 0) samples to exactly 0."""
        return torch.addcmul(self.mu, self.sigma(), torch.randn_like(self.mu))

    @torch.no_grad()
    def predict_mc(self, x: Tensor, n: int) -> Tensor:
        """Monte Carlo ensemble: mean of softmax over n posterior samples, [N, 10]."""
        return torch.stack([torch.softmax(self(x, self.sample()), -1) for _ in range(n)]).mean(0)

    def importance(self, kind: str) -> Tensor:
        if kind == "snr":  # signal-to-noise ratio |mu| / sigma (Blundell et al. 2015, sec. 5.1)
            return (self.mu.abs() / self.sigma()).detach()
        return super().importance(kind)

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        """A pruned weight becomes the point mass at 0: mu = 0 and sigma = softplus(-inf) = 0 exactly."""
        self.mu.mul_(keep)
        self.rho.masked_fill_(~keep, float("-inf"))


def build_model(cfg) -> MLP:
    """The model a TrialConfig asks for (on CPU; the caller moves it)."""
    sizes = [784, *cfg.hidden, 10]
    if cfg.method == "bbb":
        return BayesMLP(sizes, Prior(cfg.prior_pi, cfg.prior_sigma1, cfg.prior_sigma2), cfg.train_samples, cfg.compile)
    return MLP(sizes, cfg.dropout, cfg.input_dropout)
