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


# Transcendentals as plain float32 arithmetic that inductor inlines and vectorises on every ISA,
# instead of calls into Sleef's vector exp / log / log1p, whose speed varies most across CPUs
# (docs/performance.md). Polynomials by Estrin's scheme (short independent multiply-add chains);
# coefficients are our own least-squares fits on Chebyshev nodes in float64, error stated at each.
# Compiled float32 only: in eager mode each of their ~20 operations is a pass over memory, so torch's
# own function (one pass) is used there, and for float64. Accuracy of both paths: tests/test_kernels.py.
_LN2_HI, _LN2_LO = 0.693145751953125, 1.428606765330187e-06  # ln 2 = hi + lo, hi exact in 16 bits
# e^r on |r| <= ln2 / 2, degree 6: relative error 1.9e-9
_EXP_C = (1.0000000005920209, 1.0000000361258996, 0.4999999149303672, 0.1666642083211891,
          0.04166835803302364, 0.008374771520128483, 0.0013829420595802581)
# atanh(s) / s as a polynomial in s^2, the constant term exactly 1 (so tiny s gives s itself):
# on |s| <= 1/3 (log1p of t in [0, 1]) relative error 4.5e-9; on |s| <= 0.1716 (log) 8.3e-10
_ATANH_LOG1P_C = (1.0, 0.33333206824204503, 0.20010809076547395, 0.14000423904620446, 0.14007562378313762)
_ATANH_LOG_C = (1.0, 0.33333389064978036, 0.1998868949101971, 0.14937651066450686)
_SQRT_HALF_BITS = 0x3F3504F3  # the float32 bits of sqrt(2) / 2
# sin(a) / a and cos(a) as polynomials in a^2 on |a| <= pi / 4: absolute error 2.4e-9 and 4.7e-11
_SIN_C = (0.9999999969220256, -0.1666665068660358, 0.008332036330443174, -0.0001950396312591788)
_COS_C = (0.9999999999525452, -0.49999999615145646, 0.0416666167158721, -0.001388661860492518, 2.4379880306558404e-05)


def _inline(x: Tensor) -> bool:
    """Use the inlined float32 arithmetic (compiled float32) rather than torch's function."""
    return x.dtype == torch.float32 and torch.compiler.is_compiling()


def _poly(x: Tensor, coeffs) -> Tensor:
    """sum_k coeffs[k] x^k by Estrin's scheme: pair terms as (c0 + c1 x), (c2 + c3 x), ..., then pair
    those with x^2, then x^4: depth log2(len) instead of len - 1 dependent multiply-adds."""
    terms, p = list(coeffs), x
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] * p if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        p = p * p
    return terms[0]


def _two_atanh(s: Tensor, coeffs) -> Tensor:
    """2 atanh(s) = 2 s p(s^2), p one of the fits above (_ATANH_LOG1P_C, _ATANH_LOG_C)."""
    return 2 * s * _poly(s * s, coeffs)


def exp32(x: Tensor, normal: bool = False) -> Tensor:
    """e^x for float32 x: x = k ln2 + r, |r| <= ln2/2, e^x = 2^k e^r with 2^k built from the exponent
    bits. By default every x is handled: 2^k is applied as two exact powers 2^(k//2) 2^(k - k//2), so
    results in float32's subnormal range round once, as they should; x <= -110 gives 0 (below -103.97,
    e^x is under half the smallest subnormal, 2^-150), x >= 89 gives inf. normal=True is for callers
    whose x is known to lie in [-87, 88] (a normal result): no clamp, one power of 2, fewer operations.
    Keep the clamp a torch.clamp: the same values as torch.where compiled to a much slower kernel."""
    if not _inline(x):
        return torch.exp(x)
    if not normal:
        x = x.clamp(-110.0, 89.0)
    k = torch.round(x * (1 / math.log(2)))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    ki = k.to(torch.int32)  # in [-159, 128]: both halves are normal exponents
    if normal:
        return _poly(r, _EXP_C) * ((ki + 127) << 23).view(torch.float32)
    half = ki >> 1
    scale1 = ((half + 127) << 23).view(torch.float32)
    scale2 = ((ki - half + 127) << 23).view(torch.float32)
    return _poly(r, _EXP_C) * scale1 * scale2


def _log32_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """(k, f) with x = 2^k (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)), read from the float's bits: with the
    bits of sqrt(2)/2 subtracted first, the exponent field is k and the mantissa field, with those bits
    added back, is 1 + f (the cut at sqrt(2)/2 then needs no compare and select)."""
    ix = x.view(torch.int32) - _SQRT_HALF_BITS
    m = ((ix & 0x7FFFFF) + _SQRT_HALF_BITS).view(torch.float32)
    return (ix >> 23).to(torch.float32), m - 1


def _log32_join(x: Tensor, k: Tensor, s: Tensor) -> Tensor:
    """log x = k ln 2 + 2 atanh(s), s = f / (2 + f) in [-0.1716, 0.1716]; log 0 = -inf."""
    out = k * _LN2_HI + (_two_atanh(s, _ATANH_LOG_C) + k * _LN2_LO)
    return torch.where(x > 0, out, float("-inf"))


def log32(x: Tensor) -> Tensor:
    """Natural log of finite float32 x >= 0 in the normal range (log 0 = -inf)."""
    if not _inline(x):
        return torch.log(x)
    k, f = _log32_parts(x)
    return _log32_join(x, k, f / (2 + f))


def softplus_sigmoid(rho: Tensor) -> tuple[Tensor, Tensor]:
    """(softplus(rho), sigmoid(rho)) [same shape as rho] from one exp and one division: sigma and its
    derivative d sigma / d rho, each within a few float32 ulps of the exact value for every rho.

    softplus(rho) = max(rho, 0) + log1p(t), t = e^-|rho| in [0, 1], so nothing overflows (rho > 88
    gives rho, not inf), sigma > 0 wherever t > 0 (log1p(t) ~ t where 1 + t rounds to 1, rho < -17),
    and softplus(-inf) = 0 exactly, which pruning relies on. log1p(t) = 2 atanh(t / (2 + t)) (s <= 1/3;
    the fit's constant term is 1, so tiny t gives t itself), sigmoid(rho) = (t or 1) /
    (1 + t); both quotients come from one reciprocal q = 1 / ((2 + t)(1 + t)). In eager mode: torch.log1p.
    """
    t = exp32(-rho.abs())
    a, b = 2 + t, 1 + t
    q = 1 / (a * b)
    log1p_t = _two_atanh(t * b * q, _ATANH_LOG1P_C) if _inline(t) else torch.log1p(t)
    return rho.clamp_min(0) + log1p_t, torch.where(rho < 0, t, 1.0) * a * q


def softplus(rho: Tensor) -> Tensor:
    """sigma = log(1 + e^rho), accurate and > 0 for every finite rho, 0 at rho = -inf (see softplus_sigmoid)."""
    return softplus_sigmoid(rho)[0]


def _kl_forward(mu: Tensor, rho: Tensor, eps: Tensor, k1: float, k2: float, c1: float, c2: float):
    """w = mu + softplus(rho) * eps [P] and the KL estimate at w (scalar); also what backward needs.

    KL (Blundell et al. 2015, eq. 2, one sample): log q(w) - log P(w), with E_q[log q] taken as the
    closed-form Gaussian entropy -sum(log sigma) - P/2 (1 + log 2pi): the same gradient as log q(w)
    (its eps^2 term has none), minus a zero-mean term in the value, one pass fewer.
    Prior (eq. 7): log P(w) = a1 + log(1 + e), a_k = c_k - k_k w^2 - log(2pi)/2, e = exp(a2 - a1).
    a2 - a1 <= c2 - c1 <= 80 (BBBParams.check) and is clamped at -80, so e is a normal float (no
    overflow, no slow subnormals); the clamp changes log P by < P * 2e-35. -log sigma - log(1 + e) is
    one log, log(sigma (1 + e)), without log1p: where 1 + e rounds to 1 the lost e is below float32
    resolution of log sigma. Three divisions: softplus_sigmoid's, sigmoid / sigma, and one reciprocal
    shared by the log and e / (1 + e) (_log_and_ratio).
    The gradient is formed here, where it shares e, 1 + e and the sigmoid: dKL/dw = 2 w (k1 (1 - r) +
    k2 r), r = e / (1 + e) [P]; eps * sigmoid(rho) and sigmoid(rho) / sigma are saved for backward.
    A pruned weight (rho = -inf) gives KL = inf: a point mass has no density; it is not trained.
    """
    n = mu.numel()
    sigma, sig = softplus_sigmoid(rho)
    w = torch.addcmul(mu, sigma, eps)
    w2 = w * w
    e = exp32(torch.clamp_min(w2 * (k1 - k2) + (c2 - c1), -80.0), normal=True)
    u = 1 + e
    log_x, r = _log_and_ratio(sigma * u, e, u)
    kl = (k1 * w2 - log_x).sum() - (c1 + 0.5) * n
    d = w * (2 * k1 + (2 * (k2 - k1)) * r)
    return w, kl, d, eps * sig, sig / sigma


def _log_and_ratio(x: Tensor, e: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(log x, e / u) from one division for float32: 1 / ((2 + f) u) gives log32's f / (2 + f) and
    e / u (2 + f is in [1.7, 2.5] and u = 1 + e in [1, e^(c2 - c1) + 1], so the product is safe).
    In eager mode: torch.log and a plain division."""
    if not _inline(x):
        return torch.log(x), e / u
    k, f = _log32_parts(x)
    q = 1 / ((2 + f) * u)
    return _log32_join(x, k, f * u * q), e * (2 + f) * q


def _kl_backward(g_w: Tensor, g_kl: Tensor, d: Tensor, eps_sig: Tensor, sig_over_sigma: Tensor):
    """Gradients of (w, KL) w.r.t. (mu, rho): two multiply-adds per weight, no transcendental.
    d/dmu = g_w + g_kl d; d/drho = (d/dmu * eps - g_kl / sigma) * sigmoid(rho), from eps * sigmoid
    and sigmoid / sigma saved by the forward: 4 streams read, 2 written (memory-bound)."""
    g_mu = g_w + g_kl * d
    return g_mu, g_mu * eps_sig - g_kl * sig_over_sigma


# Threefry4x32-20 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", sec. 3.2): a
# counter-based generator, a pure function of (counter, key), so torch.compile fuses it into one
# parallel loop (torch's CPU normal_ is one sequential mt19937 stream). Add / rotate / xor on int32
# lanes vectorise on every x86 ISA, where Philox's 32 x 32 -> 64-bit multiply does not. 20 rounds is
# Random123's default, a safety margin over the fewest that pass BigCrush (Salmon et al., Table 2).
_ROT = ((10, 26), (11, 21), (13, 27), (23, 5), (6, 20), (17, 11), (25, 10), (18, 20))  # R_{d,j} for 4 x 32
_PARITY = 0x1BD11BDA  # Skein's key-schedule parity constant (Threefish, 32-bit words)


def _srl(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int32 lanes holding unsigned bits (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (32 - s)) - 1)


def _rotl(x: Tensor, r: int) -> Tensor:
    """Rotate the 32 bits of each int32 lane left by r."""
    return (x << r) | _srl(x, 32 - r)


def _as_int32(words: Tensor) -> Tensor:
    """int64 values in [0, 2^32) -> int32 tensors with the same 32 bits."""
    return (words - ((words >> 31) << 32)).to(torch.int32)


def threefry4x32(c: tuple[Tensor, Tensor, Tensor, Tensor], key: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Threefry4x32-20 on counter words c (int32 tensors; the bits of the unsigned 32-bit values) under
    key (int64 [4], values in [0, 2^32)); returns the 4 output words as int32 bit patterns. Rounds mix
    word pairs (x0, x1), (x2, x3) on even rounds and (x0, x3), (x2, x1) on odd ones; every 4 rounds the
    key schedule ks[s..s+3] (+ s on the last word) is injected, ks[4] = parity of the key words."""
    ks = _as_int32(torch.cat([key, (key[0] ^ key[1] ^ key[2] ^ key[3] ^ _PARITY)[None]]))
    x = [c[i] + ks[i] for i in range(4)]
    for r in range(20):
        a, b = _ROT[r % 8]
        p, q = (1, 3) if r % 2 == 0 else (3, 1)  # the words added into x0 and x2 this round
        x[0] = x[0] + x[p]
        x[p] = _rotl(x[p], a) ^ x[0]
        x[2] = x[2] + x[q]
        x[q] = _rotl(x[q], b) ^ x[2]
        if r % 4 == 3:
            s = r // 4 + 1
            x = [x[i] + ks[(s + i) % 5] for i in range(4)]
            x[3] = x[3] + s
    return x[0], x[1], x[2], x[3]


def cos_sin_2pi(u: Tensor) -> tuple[Tensor, Tensor]:
    """(cos 2 pi u, sin 2 pi u) for float32 u in [0, 1], inlined: u = q/4 + v with q = round(4u) and
    |v| <= 1/8, so a = 2 pi v is in [-pi/4, pi/4] where short polynomials are accurate to 3e-9; the
    quadrant q then rotates (cos a, sin a) by q x 90 degrees (swap and negate, exact)."""
    if not _inline(u):
        return torch.cos((2 * math.pi) * u), torch.sin((2 * math.pi) * u)
    q = torch.round(4 * u)
    a = (2 * math.pi) * (u - 0.25 * q)  # u - q/4 is exact (Sterbenz), so a carries no cancellation error
    a2 = a * a
    s, c = a * _poly(a2, _SIN_C), _poly(a2, _COS_C)
    qi = q.to(torch.int32)
    odd, neg = (qi & 1) == 1, (qi & 2) == 2
    cos, sin = torch.where(odd, -s, c), torch.where(odd, c, s)
    return torch.where(neg, -cos, cos), torch.where(neg, -sin, sin)


def normal_noise(n: int, key: Tensor) -> Tensor:
    """n independent N(0, 1) floats [n]: Threefry4x32-20 on counters 0..n/4-1 under the 128-bit key
    (int64 [4]), then Box-Muller on 24-bit uniforms in (0, 1): u >= 2^-25, so log(u) is finite and
    sqrt sees arguments in [0, 35]; cos and sin of 2 pi u come from cos_sin_2pi."""
    c0 = torch.arange((n + 3) // 4, dtype=torch.int32, device=key.device)
    zero = torch.zeros_like(c0)
    u = [(_srl(c, 8).to(torch.float32) + 0.5) * 2.0 ** -24 for c in threefry4x32((c0, zero, zero, zero), key)]
    r0, r1 = torch.sqrt(-2 * log32(u[0])), torch.sqrt(-2 * log32(u[2]))
    (c0, s0), (c1, s1) = cos_sin_2pi(u[1]), cos_sin_2pi(u[3])
    return torch.cat([r0 * c0, r0 * s0, r1 * c1, r1 * s1])[:n]


# The ~90 elementwise operations of the sample + KL and the ~300 integer ones of Threefry are op-bound in
# eager mode; torch.compile fuses each function into one vectorised loop. The eager path computes the
# same formulas with torch's exp / log / log1p / cos / sin in place of the inlined ones, so `compile`
# never changes a result beyond float rounding (a few ulps; tests/test_kernels.py).
_KERNELS = {False: (_kl_forward, _kl_backward, normal_noise)}
# Inductor builds its C++ without floating-point contraction: each a * b + c above would be two
# roundings and two dependent instructions instead of one FMA (every x86 CPU with AVX2 has it).
_CPU_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}


def compile_kernel(f, dynamic: bool | None = None):
    """torch.compile for the per-weight kernels (BBB's here, Sparse VD's): fused, with FMA contraction."""
    return torch.compile(f, dynamic=dynamic, options=_CPU_OPTIONS)


def kl_kernels(compiled: bool):
    """(KL forward, KL backward, weight noise): eager, or compiled once per process on first use."""
    if compiled not in _KERNELS:
        _KERNELS[True] = tuple(compile_kernel(f) for f in _KERNELS[False])
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
    """A fresh 128-bit Threefry key [4] drawn from torch's global RNG: the noise stream stays a pure
    function of torch.manual_seed (training reseeds every epoch, so resumes are exact)."""
    return torch.randint(0, 2 ** 32, (4,), dtype=torch.int64).to(device)
