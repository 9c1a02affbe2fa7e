"""BBB's per-weight kernels against float64: softplus and its sigmoid, the inlined exp, log and
cos / sin (compiled, where they run) and torch's (eager), the fused sample + KL over the whole rho
range, and Threefry4x32-20's known answers on int32 words."""
import math

import pytest
import torch

from suite.kernels import Prior, cos_sin_2pi, exp32, log32, sample_and_kl, softplus, softplus_sigmoid, threefry4x32

RHO = torch.cat([torch.linspace(-30, 20, 200_001), torch.tensor([-17.0, -16.6, -9.0, 0.0, 9.0])])


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(((got.double() - want) / want.abs()).abs().max())


def test_softplus_and_sigmoid_match_float64_across_the_rho_range():
    """rho < -16.6 is where 1 + e^rho rounds to 1 in float32: a naive log(1 + e^rho) returns 0 there."""
    sigma, sig = softplus_sigmoid(RHO)
    rho64 = RHO.double()
    assert rel_err(sigma, torch.nn.functional.softplus(rho64, threshold=50)) <= 1e-6
    assert rel_err(sig, torch.sigmoid(rho64)) <= 1e-6
    assert (sigma > 0).all() and torch.equal(sigma, softplus(RHO))
    assert float(torch.log(1 + torch.exp(torch.tensor(-20.0)))) == 0  # the failure mode the test guards


def test_softplus_special_values():
    """softplus(-inf) = 0 exactly (a pruned weight's sigma), finite and = rho where e^rho overflows."""
    rho = torch.tensor([float("-inf"), -60.0, 89.0, 1e30, float("inf")])
    sigma, sig = softplus_sigmoid(rho)
    assert sigma[0] == 0 and sig[0] == 0
    assert 0 < sigma[1] == sig[1]  # e^-60 ~ 8.8e-27: both are e^rho to float32 precision
    assert sigma[2] == 89.0 and sigma[3] == 1e30 and sigma[4] == float("inf")
    assert torch.equal(sig[2:], torch.ones(3))
    rho64 = RHO.double()  # float64 (the reference tests' dtype) takes torch's log1p: float64-exact
    torch.testing.assert_close(softplus(rho64), torch.nn.functional.softplus(rho64, threshold=50), rtol=1e-12, atol=0)


def test_softplus_compiled_equals_eager():
    """Inlined (compiled) and torch's exp / log1p (eager) agree to a few ulps: each is within 1e-6 of float64."""
    compiled = torch.compile(softplus_sigmoid)(RHO)
    for got, want in zip(compiled, softplus_sigmoid(RHO)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def _inlined(*args):
    """softplus_sigmoid, exp32, log32 and cos_sin_2pi as torch.compile runs them (inlined float32)."""
    rho, x, y, u, z = args
    return (*softplus_sigmoid(rho), log32(x), exp32(y), *cos_sin_2pi(u), exp32(z, normal=True))


def test_inlined_transcendentals_match_float64_when_compiled():
    """The float32 arithmetic that replaces Sleef's calls under torch.compile, over its whole range:
    softplus / sigmoid for rho in [-30, 20], log from tiny to huge and near 1, exp from subnormal
    results to overflow (and over [-87, 88] with normal=True), cos / sin of 2 pi u for u in [0, 1]."""
    torch.manual_seed(0)
    x = torch.cat([torch.exp(torch.rand(200_000) * 170 - 85), 1 + (torch.rand(10_000) - 0.5) * 1e-3,
                   torch.tensor([0.5, 1.0, 2.0, math.sqrt(2), 1.1754944e-38, 3.4e38, 0.0])])
    y = torch.cat([torch.rand(200_000) * 176 - 88, torch.tensor([0.0, -87.3, -100.0, -103.0, 88.7, 88.8, 1e30,
                                                                 float("-inf"), float("inf")])])
    u = torch.cat([torch.rand(200_000), torch.linspace(0, 1, 4001)])
    z = torch.cat([torch.rand(200_000) * 175 - 87, torch.tensor([-87.0, 0.0, 88.0])])  # exp32's normal=True range
    rho = torch.cat([RHO, torch.tensor([float("-inf")])])
    sigma, sig, log_x, exp_y, cos, sin, exp_z = torch.compile(_inlined)(rho, x, y, u, z)
    assert rel_err(sigma[:-1], torch.nn.functional.softplus(RHO.double(), threshold=50)) <= 1e-6
    assert rel_err(sig[:-1], torch.sigmoid(RHO.double())) <= 1e-6
    assert (sigma[:-1] > 0).all() and sigma[-1] == 0 and sig[-1] == 0
    want = torch.log(x[:-1].double())  # relative where log is not ~0; near x = 1 that is x - 1's own spacing
    assert float(((log_x[:-1].double() - want).abs() / want.abs().clamp_min(1e-30)).max()) <= 1e-6
    assert log_x[-1] == float("-inf")
    want = torch.exp(y.double()).float().double()  # float32's exp, correctly rounded (subnormals, 0, inf)
    finite = torch.isfinite(want) & (want > 1.2e-38)
    assert rel_err(exp_y[finite], torch.exp(y[finite].double())) <= 1e-6
    tiny = (want > 0) & (want <= 1.2e-38)  # subnormal results: within one subnormal step (2^-149)
    assert float((exp_y[tiny].double() - want[tiny]).abs().max()) <= 2.0 ** -149
    assert torch.equal(exp_y[want == 0], torch.zeros(int((want == 0).sum())))
    assert torch.isinf(exp_y[torch.isinf(want)]).all() and exp_y[-2] == 0
    assert rel_err(exp_z, torch.exp(z.double())) <= 1e-6
    angle = 2 * math.pi * u.double()
    assert float((cos.double() - torch.cos(angle)).abs().max()) <= 3e-7
    assert float((sin.double() - torch.sin(angle)).abs().max()) <= 3e-7


def test_log32_eager_and_log_zero():
    x = torch.exp(torch.rand(1000) * 170 - 85)
    torch.testing.assert_close(log32(x).double(), torch.log(x.double()), rtol=1e-6, atol=0)
    assert log32(torch.tensor([0.0]))[0] == float("-inf")


def test_fused_kl_gradients_over_the_whole_rho_range_match_float64_autograd():
    """float32 kernel vs a float64 autograd reference for rho in [-30, 20] (sigma 1e-13 .. 20)."""
    torch.manual_seed(1)
    prior = Prior(0.5, 1.0, math.exp(-6))
    n = 5000
    mu, rho = torch.rand(n) * 0.4 - 0.2, torch.rand(n) * 50 - 30
    eps, g_w = torch.randn(n), torch.randn(n)
    mu32, rho32 = mu.clone().requires_grad_(), rho.clone().requires_grad_()
    w, kl = sample_and_kl(mu32, rho32, eps, prior)
    ((w * g_w).sum() + 0.7 * kl).backward()
    mu64, rho64 = mu.double().requires_grad_(), rho.double().requires_grad_()
    sigma = torch.nn.functional.softplus(rho64, threshold=50)
    w64 = mu64 + sigma * eps.double()
    kl64 = -torch.log(sigma).sum() - 0.5 * (1 + math.log(2 * math.pi)) * n - prior.log_prob(w64).sum()
    ((w64 * g_w.double()).sum() + 0.7 * kl64).backward()
    torch.testing.assert_close(w.double(), w64.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(kl.double(), kl64.detach(), rtol=1e-5, atol=0)
    # the narrow prior component (k2 = e^12 / 2) makes dlogP/dw move 3e-5 relative per float32 ulp of w
    # near |w| = 0.02: float32's own rounding of w, not the kernel, sets this tolerance
    torch.testing.assert_close(mu32.grad.double(), mu64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rho32.grad.double(), rho64.grad, rtol=1e-4, atol=1e-5)


def test_threefry_matches_the_random123_known_answers():
    """Known-answer vectors of Threefry4x32-20 from the Random123 distribution (kat_vectors), on int32
    words holding the unsigned bits."""
    def i32(v: int) -> torch.Tensor:
        return torch.tensor([v - (1 << 32) if v >= 1 << 31 else v], dtype=torch.int32)
    pi_ctr, pi_key = (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0, 0x082EFA98, 0xEC4E6C89)
    cases = [((0, 0, 0, 0), (0, 0, 0, 0), (0x9C6CA96A, 0xE17EAE66, 0xFC10ECD4, 0x5256A7D8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 4, (0x2A881696, 0x57012287, 0xF6C7446E, 0xA16A6732)),
             (pi_ctr, pi_key, (0x59CD1DBB, 0xB8879579, 0x86B5D00C, 0xAC8B6D84))]
    for ctr, key, want in cases:
        got = threefry4x32(tuple(i32(v) for v in ctr), torch.tensor(key))
        assert all(g.dtype == torch.int32 for g in got)
        assert tuple(int(g) & 0xFFFFFFFF for g in got) == want


@pytest.mark.slow
def test_bench_breakdown_covers_each_method_and_names_the_cpu():
    """One round of suite.bench's per-kernel table on random data: every method's kernels are timed
    (a positive, finite time each), and the header facts (CPU model, vector ISA) are filled in."""
    from suite import bench
    torch.manual_seed(0)
    x, y = torch.rand(300, 784), torch.randint(0, 10, (300,))
    bd = bench.breakdown(x, y, rounds=1, steps=2)
    assert set(bd["BBB"]) == {"noise", "sample+KL fwd", "sample+KL bwd", "matmuls fwd", "matmuls bwd",
                              "optimizer", "other", "step"}
    assert set(bd["Sparse VD"]) == {"terms fwd", "terms bwd", "matmuls fwd", "matmuls bwd", "optimizer", "other", "step"}
    for method in ("SGD", "BBB", "Sparse VD"):
        timed = {k: v["ms"] for k, v in bd[method].items() if k != "other"}  # "other" is the step's remainder
        assert all(0 < ms < math.inf for ms in timed.values()), (method, timed)
    cpu = bench.cpu_info()
    assert cpu["vector_isa"] == torch.backends.cpu.get_cpu_capability() and cpu["cpu_model"] != "unknown"
    t = bench.speed_targets({"ours SGD": 1.0, "ours BBB (1 sample)": 1.9, "ours Sparse VD": 2.6,
                             "BLiTZ BBB (1 sample)": 7.0}, 1)
    assert [(d["name"], d["met"]) for d in t] == [("ours BBB / ours SGD", True), ("ours Sparse VD / ours SGD", False),
                                                  ("BLiTZ BBB / ours BBB", False)]
