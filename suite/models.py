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

LOG_2PI = math.log(2 * math.pi)


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


@dataclass(frozen=True)
class Prior:
    """Scale-mixture prior P(w) = pi N(w|0,s1^2) + (1-pi) N(w|0,s2^2) (Blundell et al. 2015, eq. 7)."""

    pi: float
    sigma1: float
    sigma2: float

    def log_prob(self, w: Tensor) -> Tensor:
        """Elementwise log P(w), computed stably as logaddexp of the two weighted components."""
        return torch.logaddexp(self._log_comp(w, self.pi, self.sigma1), self._log_comp(w, 1 - self.pi, self.sigma2))

    @staticmethod
    def _log_comp(w: Tensor, weight: float, s: float) -> Tensor:
        return math.log(weight) - math.log(s) - 0.5 * LOG_2PI - w * w / (2 * s * s)


def softplus(rho: Tensor) -> Tensor:
    """sigma = log(1 + e^rho). Written out rather than F.softplus, whose thresholded kernel measured
    ~2x slower here; exact for every rho the optimiser produces (it would overflow only for
    rho > 88, i.e. sigma > 1e38), and softplus(-inf) = 0 exactly, which pruning relies on."""
    return torch.exp(rho).log1p_()


def _kl_forward(mu: Tensor, rho: Tensor, eps: Tensor, k1: float, k2: float, c1: float, c2: float):
    """w = mu + softplus(rho) * eps [P] and the KL estimate at w (scalar); also what backward needs.

    KL estimate (Blundell eq. 2, one sample): log q(w) - log P(w). For E_q[log q] we use the
    closed-form Gaussian entropy, -sum(log sigma) - P/2 (1 + log 2pi), instead of log q(w) at the
    sample. Why: with w = mu + sigma*eps, log q(w) = -sum(log sigma) - sum(eps^2)/2 - P/2 log 2pi,
    whose eps^2 part has zero gradient, so the gradient Adam sees is identical; the value only
    loses the zero-mean noise -sum(eps^2 - 1)/2, and we skip a pass over all weights.
    Prior: log P(w) = logaddexp(a1, a2), a_k = c_k - k_k w^2 - log(2pi)/2 with c_k = log(pi_k / s_k),
    k_k = 1 / (2 s_k^2) (Blundell eq. 7), computed as a1 + log1p(e), e = exp(a2 - a1) [P].
    a2 - a1 <= c2 - c1, so e never overflows; the clamp keeps exp out of the denormal range
    (measured 10x slower on x86) and changes log P by < P * 2e-35, far below float32 resolution.
    """
    n = mu.numel()
    sigma = softplus(rho)
    w = torch.addcmul(mu, sigma, eps)
    w2 = w * w
    e = torch.exp(torch.clamp_min(w2 * (k1 - k2) + (c2 - c1), -80.0))
    # -H[q] - log P(w) = -sum(log sigma) - sum(log1p(e)) + k1 sum(w^2) + consts; the two logs are
    # taken as one, log(sigma (1 + e)), which saves a transcendental per weight.
    kl = -torch.log(sigma * (1 + e)).sum() + k1 * w2.sum() - (c1 + 0.5) * n
    return w, kl, sigma, e


def _kl_backward(g_w: Tensor, g_kl: Tensor, rho: Tensor, sigma: Tensor, eps: Tensor, w: Tensor, e: Tensor,
                 k1: float, k2: float):
    """Gradients of (w, KL) w.r.t. (mu, rho), by hand: it reuses e and sigma from the forward."""
    # d(-log P)/dw = 2 w (k1 (1 - r) + k2 r), r = e / (1 + e) the narrow component's responsibility
    g = g_w + g_kl * w * (2 * k1 + (2 * (k2 - k1)) * (e / (e + 1)))
    # d/dsigma: through w (g * eps) and through the entropy (-1/sigma); dsigma/drho = sigmoid(rho)
    return g, (g * eps - g_kl / sigma) * torch.sigmoid(rho)


# Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"): multipliers M0, M1
# and Weyl key increments W0, W1. A counter-based generator is a pure function of (counter, key), so
# torch.compile can fuse it into one parallel, vectorised loop; torch's CPU normal_ is one sequential
# mt19937 stream (1.6 ms for 648k normals here, the largest extra cost of a BBB step).
_M0, _M1, _W0, _W1, _MASK32 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF


def philox4x32(c: tuple[Tensor, Tensor, Tensor, Tensor], key: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 on counter words c (int64 tensors holding 32-bit values) under key (int64 [2])."""
    c0, c1, c2, c3 = c
    for r in range(10):
        # 32x32 -> 64-bit products; int64 wraps, and masking recovers the unsigned high/low words
        p0, p1 = c0 * _M0, c2 * _M1
        k0, k1 = (key[0] + r * _W0) & _MASK32, (key[1] + r * _W1) & _MASK32
        c0, c1, c2, c3 = ((p1 >> 32) & _MASK32) ^ c1 ^ k0, p1 & _MASK32, ((p0 >> 32) & _MASK32) ^ c3 ^ k1, p0 & _MASK32
    return c0, c1, c2, c3


def philox_normal(n: int, key: Tensor) -> Tensor:
    """n independent N(0, 1) floats [n]: Philox4x32-10 on counters 0..n/4-1 under the 64-bit key
    (int64 [2]), then Box-Muller on 24-bit uniforms in (0, 1)."""
    c0 = torch.arange((n + 3) // 4, dtype=torch.int64, device=key.device)
    zero = torch.zeros_like(c0)
    u = [((c >> 8).to(torch.float32) + 0.5) * 2.0 ** -24 for c in philox4x32((c0, zero, zero, zero), key)]
    r0, r1 = torch.sqrt(-2 * torch.log(u[0])), torch.sqrt(-2 * torch.log(u[2]))
    t0, t1 = (2 * math.pi) * u[1], (2 * math.pi) * u[3]
    return torch.cat([r0 * torch.cos(t0), r0 * torch.sin(t0), r1 * torch.cos(t1), r1 * torch.sin(t1)])[:n]


# The ~15 elementwise passes of the KL and the ~70 of Philox are memory- or op-bound in eager mode;
# torch.compile fuses each function into one loop (measured on 648k weights, 2-core CPU: KL forward
# 2.1 -> 1.2 ms, backward 1.0 -> 0.2 ms, noise 1.6 ms (torch.randn) -> 0.75 ms). The eager path
# draws the same Philox numbers, only slower (~10 ms), so `compile` never changes a result.
_KERNELS = {False: (_kl_forward, _kl_backward, philox_normal)}


def kl_kernels(compiled: bool):
    """(KL forward, KL backward, weight noise): eager, or compiled once per process on first use."""
    if compiled not in _KERNELS:
        _KERNELS[True] = tuple(torch.compile(f, dynamic=None) for f in _KERNELS[False])
    return _KERNELS[compiled]


class _SampleKL(torch.autograd.Function):
    """Autograd wrapper around _kl_forward / _kl_backward."""

    @staticmethod
    def forward(ctx, mu: Tensor, rho: Tensor, eps: Tensor, prior: Prior, compiled: bool):
        k1, k2 = 1 / (2 * prior.sigma1 ** 2), 1 / (2 * prior.sigma2 ** 2)
        c1, c2 = math.log(prior.pi / prior.sigma1), math.log((1 - prior.pi) / prior.sigma2)
        fwd, ctx.bwd, _ = kl_kernels(compiled)
        w, kl, sigma, e = fwd(mu, rho, eps, k1, k2, c1, c2)
        ctx.save_for_backward(rho, sigma, eps, w, e)
        ctx.k = (k1, k2)
        return w, kl

    @staticmethod
    def backward(ctx, g_w: Tensor, g_kl: Tensor):
        g_mu, g_rho = ctx.bwd(g_w, g_kl, *ctx.saved_tensors, *ctx.k)
        return g_mu, g_rho, None, None, None


def sample_and_kl(mu: Tensor, rho: Tensor, eps: Tensor, prior: Prior, compiled: bool = False) -> tuple[Tensor, Tensor]:
    """One posterior sample w [P] and the scalar KL estimate; differentiable in mu and rho."""
    return _SampleKL.apply(mu, rho, eps, prior, compiled)


def weight_noise_key(device: torch.device) -> Tensor:
    """A fresh 64-bit Philox key [2] drawn from torch's global RNG: the noise stream stays a pure
    function of torch.manual_seed (training reseeds every epoch, so resumes are exact)."""
    return torch.randint(0, 2 ** 32, (2,), dtype=torch.int64).to(device)


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
