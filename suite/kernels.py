"""BBB's per-weight kernels: softplus, the fused sample + KL (forward and hand-written backward),
and the counter-based weight noise. Each runs over the whole flat parameter vector (~650k floats for
784-500-500-10), so each is a handful of elementwise passes that torch.compile fuses into one loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class Prior:
    """Scale-mixture prior P(w) = pi N(w|0,s1^2) + (1-pi) N(w|0,s2^2) (Blundell et al. 2015, eq. 7)."""

    pi: float
    sigma1: float
    sigma2: float

    def log_prob(self, w: Tensor) -> Tensor:
        """Elementwise log P(w), computed stably as logaddexp of the two weighted components."""
        return torch.logaddexp(self._log_comp(w, self.pi, self.sigma1), self._log_comp(w, 1 - self.pi, self.sigma2))

    def kl_constants(self) -> tuple[float, float, float, float]:
        """(k1, k2, c1, c2) of the fused KL: k_k = 1 / (2 s_k^2), c_k = log(pi_k / s_k)."""
        return (1 / (2 * self.sigma1 ** 2), 1 / (2 * self.sigma2 ** 2),
                math.log(self.pi / self.sigma1), math.log((1 - self.pi) / self.sigma2))

    @staticmethod
    def _log_comp(w: Tensor, weight: float, s: float) -> Tensor:
        return math.log(weight) - math.log(s) - 0.5 * LOG_2PI - w * w / (2 * s * s)


# Transcendentals. Sleef's vector log and log1p (which torch.log / torch.log1p and inductor call) are
# the slowest part of the sample + KL forward and vary most across CPUs: log1p measured 12x slower than
# log on an AVX-512 EPYC (issue 12), and in the fused forward on an AVX2 EPYC the two logs took 43 % of
# the time. The two below are plain float32 arithmetic that inductor inlines and vectorises on every
# ISA; both are within 3e-7 relative of float64 (tests/test_kernels.py).
_LN2_HI, _LN2_LO = 0.693145751953125, 1.428606765330187e-06  # ln 2 = hi + lo, hi exact in 16 bits


def _two_atanh(s: Tensor, terms: int) -> Tensor:
    """2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), the first terms+1 terms (Horner in s^2)."""
    s2 = s * s
    p = 1.0 / (2 * terms + 1)
    for k in range(terms - 1, -1, -1):
        p = p * s2 + 1.0 / (2 * k + 1)
    return 2 * s * p


def _log1p_unit(t: Tensor) -> Tensor:
    """log1p(t) for t in [0, 1] as 2 atanh(t / (2 + t)): s <= 1/3, so 8 series terms leave < 2e-8.
    t is used as is (1 + t is never formed), so tiny t gives t itself and t = 0 gives 0 exactly.
    The series is sized for float32; other dtypes (float64 in tests) get torch.log1p."""
    if t.dtype != torch.float32:
        return torch.log1p(t)
    return _two_atanh(t / (2 + t), 7)


def log32(x: Tensor) -> Tensor:
    """Natural log of finite float32 x >= 0 in the normal range (log 0 = -inf): x = 2^k m with
    m in [sqrt(2)/2, sqrt(2)) read from the float's bits, log x = k ln 2 + 2 atanh((m - 1)/(m + 1)).
    Other dtypes (float64 in tests) get torch.log."""
    if x.dtype != torch.float32:
        return torch.log(x)
    bits = x.view(torch.int32)
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # mantissa in [1, 2)
    big = m > math.sqrt(2)
    m = torch.where(big, m * 0.5, m)
    k = ((bits >> 23) - 127 + big.to(torch.int32)).to(torch.float32)
    f = m - 1
    out = k * _LN2_HI + (_two_atanh(f / (2 + f), 5) + k * _LN2_LO)  # |s| <= 0.172: 6 terms leave < 3e-9
    return torch.where(x > 0, out, float("-inf"))


def softplus_sigmoid(rho: Tensor) -> tuple[Tensor, Tensor]:
    """(softplus(rho), sigmoid(rho)) [same shape as rho] from one exp: sigma and its derivative
    d sigma / d rho, each within a few float32 ulps of the exact value for every rho.

    softplus(rho) = max(rho, 0) + log1p(t), t = e^-|rho| in [0, 1], so nothing overflows (rho > 88
    gives rho, not inf), sigma > 0 wherever t > 0 (log1p(t) ~ t where 1 + t rounds to 1, rho < -17),
    and softplus(-inf) = 0 exactly, which pruning relies on. sigmoid(rho) = (t or 1) / (1 + t).
    """
    t = torch.exp(-rho.abs())
    return rho.clamp_min(0) + _log1p_unit(t), torch.where(rho < 0, t, 1.0) / (1 + t)


def softplus(rho: Tensor) -> Tensor:
    """sigma = log(1 + e^rho), accurate and > 0 for every finite rho, 0 at rho = -inf (see softplus_sigmoid)."""
    return softplus_sigmoid(rho)[0]


def _kl_forward(mu: Tensor, rho: Tensor, eps: Tensor, k1: float, k2: float, c1: float, c2: float):
    """w = mu + softplus(rho) * eps [P] and the KL estimate at w (scalar); also what backward needs.

    KL estimate (Blundell eq. 2, one sample): log q(w) - log P(w). For E_q[log q] we use the
    closed-form Gaussian entropy, -sum(log sigma) - P/2 (1 + log 2pi), instead of log q(w) at the
    sample. Why: with w = mu + sigma*eps, log q(w) = -sum(log sigma) - sum(eps^2)/2 - P/2 log 2pi,
    whose eps^2 part has zero gradient, so the gradient Adam sees is identical; the value only
    loses the zero-mean noise -sum(eps^2 - 1)/2, and we skip a pass over all weights.
    Prior: log P(w) = logaddexp(a1, a2), a_k = c_k - k_k w^2 - log(2pi)/2 with c_k = log(pi_k / s_k),
    k_k = 1 / (2 s_k^2) (Blundell eq. 7), computed as a1 + log(1 + e), e = exp(a2 - a1) [P].
    a2 - a1 <= c2 - c1, so e never overflows; the clamp keeps exp out of the denormal range
    (measured 10x slower on x86) and changes log P by < P * 2e-35, far below float32 resolution.
    The two logs, -log sigma and -log(1 + e), are taken as one, log(sigma (1 + e)), and it needs no
    log1p: where 1 + e rounds to 1 (e < 6e-8) the lost e is below float32 resolution of log sigma.

    The gradient is computed here, not in backward, because it shares e, 1 + e and the sigmoid:
    d = dKL/dw = 2 w (k1 (1 - r) + k2 r), r = e / (1 + e) the narrow component's responsibility [P],
    and dsigma/drho = sigmoid(rho) [P], saved times eps and divided by sigma (the entropy's -1/sigma) [P].
    Pruned weights (rho = -inf) give KL = inf: a point mass has no density; they are not trained.
    """
    n = mu.numel()
    sigma, sig = softplus_sigmoid(rho)
    w = torch.addcmul(mu, sigma, eps)
    w2 = w * w
    e = torch.exp(torch.clamp_min(w2 * (k1 - k2) + (c2 - c1), -80.0))
    u = 1 + e
    kl = (k1 * w2 - log32(sigma * u)).sum() - (c1 + 0.5) * n
    d = w * (2 * k1 + (2 * (k2 - k1)) * (e / u))
    return w, kl, d, eps * sig, sig / sigma


def _kl_backward(g_w: Tensor, g_kl: Tensor, d: Tensor, eps_sig: Tensor, sig_over_sigma: Tensor):
    """Gradients of (w, KL) w.r.t. (mu, rho): two multiply-adds per weight, no transcendental.
    d/dmu = g_w + g_kl d; d/drho = (d/dmu * eps - g_kl / sigma) * sigmoid(rho), from eps * sigmoid
    and sigmoid / sigma saved by the forward: 4 streams read, 2 written (in a real step they come
    from memory, not cache, so each stream costs)."""
    g_mu = g_w + g_kl * d
    return g_mu, g_mu * eps_sig - g_kl * sig_over_sigma


# Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"): multipliers M0, M1
# and Weyl key increments W0, W1. A counter-based generator is a pure function of (counter, key), so
# torch.compile can fuse it into one parallel, vectorised loop; torch's CPU normal_ is one sequential
# mt19937 stream. The 32-bit words live in int32 tensors (bit patterns of the unsigned values): AVX2
# has no 64-bit vector multiply, so int64 words made inductor multiply lane by lane in scalar code
# (Philox 2.5 ms of a 4.3 ms noise kernel on an AVX2 EPYC; int32: 8 lanes per instruction, 16 on AVX-512).
_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def _srl(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int32 lanes holding unsigned bits (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (32 - s)) - 1)


def _mulhilo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """High and low 32-bit words of the 64-bit product a * m (a: int32 lanes as uint32, m: uint32).
    lo is the wrapping int32 product; hi is assembled from 16-bit halves, each partial product < 2^32."""
    ml, mh = m & 0xFFFF, m >> 16
    al, ah = a & 0xFFFF, _srl(a, 16)
    mid = ah * ml + _srl(al * ml, 16)
    mid2 = al * mh + (mid & 0xFFFF)
    hi = ah * mh + _srl(mid, 16) + _srl(mid2, 16)
    return hi, a * (m - (1 << 32))  # m as the int32 with the same bits (m >= 2^31 for both multipliers)


def philox4x32(c: tuple[Tensor, Tensor, Tensor, Tensor], key: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 on counter words c (int32 tensors; the bits of the unsigned 32-bit values) under
    key (int64 [2], values in [0, 2^32)); returns the 4 output words as int32 bit patterns."""
    c0, c1, c2, c3 = c
    # round keys [2, 10], reduced mod 2^32 and then into int32's range so the cast is exact
    ks = (key[:, None] + torch.arange(10, device=key.device) * torch.tensor([[_W0], [_W1]], device=key.device)) & 0xFFFFFFFF
    ks = (ks - ((ks >> 31) << 32)).to(torch.int32)
    for r in range(10):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ ks[0, r], lo1, hi0 ^ c3 ^ ks[1, r], lo0
    return c0, c1, c2, c3


def philox_normal(n: int, key: Tensor) -> Tensor:
    """n independent N(0, 1) floats [n]: Philox4x32-10 on counters 0..n/4-1 under the 64-bit key
    (int64 [2]), then Box-Muller on 24-bit uniforms in (0, 1): u >= 2^-25, so log(u) is finite,
    and sqrt, cos and sin see arguments in [0, 35] and [0, 2 pi], where Sleef's float versions are
    accurate to a few ulps."""
    c0 = torch.arange((n + 3) // 4, dtype=torch.int32, device=key.device)
    zero = torch.zeros_like(c0)
    u = [(_srl(c, 8).to(torch.float32) + 0.5) * 2.0 ** -24 for c in philox4x32((c0, zero, zero, zero), key)]
    r0, r1 = torch.sqrt(-2 * log32(u[0])), torch.sqrt(-2 * log32(u[2]))
    t0, t1 = (2 * math.pi) * u[1], (2 * math.pi) * u[3]
    return torch.cat([r0 * torch.cos(t0), r0 * torch.sin(t0), r1 * torch.cos(t1), r1 * torch.sin(t1)])[:n]


# The ~90 elementwise operations of the sample + KL and the ~400 integer ones of Philox are op-bound in
# eager mode; torch.compile fuses each function into one vectorised loop (`python -m suite.bench` times
# each kernel against a plain exp pass over the same floats). The eager path computes the same numbers
# with the same formulas, only slower, so `compile` never changes a result beyond float rounding.
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
        fwd, ctx.bwd, _ = kl_kernels(compiled)
        w, kl, *saved = fwd(mu, rho, eps, *prior.kl_constants())
        ctx.save_for_backward(*saved)
        return w, kl

    @staticmethod
    def backward(ctx, g_w: Tensor, g_kl: Tensor):
        g_mu, g_rho = ctx.bwd(g_w, g_kl, *ctx.saved_tensors)
        return g_mu, g_rho, None, None, None


def sample_and_kl(mu: Tensor, rho: Tensor, eps: Tensor, prior: Prior, compiled: bool = False) -> tuple[Tensor, Tensor]:
    """One posterior sample w [P] and the scalar KL estimate; differentiable in mu and rho."""
    return _SampleKL.apply(mu, rho, eps, prior, compiled)


def weight_noise_key(device: torch.device) -> Tensor:
    """A fresh 64-bit Philox key [2] drawn from torch's global RNG: the noise stream stays a pure
    function of torch.manual_seed (training reseeds every epoch, so resumes are exact)."""
    return torch.randint(0, 2 ** 32, (2,), dtype=torch.int64).to(device)
