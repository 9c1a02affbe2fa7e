"""`python -m suite.bench`: this suite's training and inference speed beside its peers, in one process.

Training steps (MNIST, batch 100, 784-500-500-10, Adam, same samples per step for every BBB):
  ours SGD / ours BBB                the suite's own models and objective, fed from device tensors
  plain SGD (tensor loop)            nn.Sequential of nn.Linear + Adam, fed from the same tensors
  plain SGD (DataLoader)             the same, fed by a torchvision DataLoader (ToTensor, shuffle)
  BLiTZ BBB                          blitz-bayesian-pytorch BayesianLinear + sample_elbo, from tensors
  bayesian-torch BBB                 bayesian-torch LinearReparameterization, from tensors
  tutorial BBB (DataLoader)          the textbook per-layer BBB recipe the original study used
Contenders are interleaved in rounds and each reports the median ms/step over all rounds, so
machine noise hits all of them alike. Inference: dense vs sparse forward at 90 % sparsity.
Peers come from the `bench` extra (pip install -e ".[bench]"); a missing peer is reported, not faked.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels, latency, prune
from .config import TrialConfig
from .data import default_data_dir, ensure, load_arrays
from .fpmode import flush_denormals
from .methods import build as build_model
from .train import make_optimizer

B, LR, PRIOR = 100, 1e-4, (0.5, 1.0, math.exp(-6))


def ours_model(method: str, samples: int = 1, compile: bool = True):
    """The suite's model and optimiser for a method, as a trial builds them."""
    cfg = TrialConfig(method=method, train_samples=samples, compile=compile)
    model = build_model(cfg)
    return model.train(), make_optimizer(cfg, model)


def train_step(model, opt, x, y) -> Callable[[], None]:
    """One training step on a random batch of (x, y), as suite.train runs it."""
    n = len(y)

    def step():
        idx = torch.randint(0, n, (B,))
        loss, _, _ = model.objective(x[idx], y[idx], 1.0 / 600)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def ours(method: str, x, y, samples: int = 1, compile: bool = True) -> Callable[[], None]:
    return train_step(*ours_model(method, samples, compile), x, y)


# -- per-kernel breakdown: where one training step's time goes, per method, on this CPU
Kernel = tuple[str, str, Callable[[], object]]  # (method, kernel, callable timing that kernel alone)
FLAG_X_EXP = 8.0  # an elementwise kernel slower than this many plain exp passes over the same floats is flagged
NOT_ELEMENTWISE = ("step", "matmuls fwd", "matmuls bwd", "other")


def _ours_parts(method: str, x, y):
    """Model and optimiser as trials build them (BBB compiled, 1 sample), with gradients set by one
    real step, a fixed batch, and the full training step on that same model."""
    model, opt = ours_model(method)
    step = train_step(model, opt, x, y)
    step()
    return model, opt, x[:B], y[:B], step


def _matmuls(model, xb, yb, flat: Tensor) -> list[tuple[str, Callable[[], object]]]:
    """The 3 linear layers + cross-entropy from flat weights, forward alone and backward alone."""
    leaf = flat.detach().requires_grad_()
    nll = F.cross_entropy(model(xb, leaf), yb)
    return [("matmuls fwd", lambda: F.cross_entropy(model(xb, leaf), yb)),
            ("matmuls bwd", lambda: torch.autograd.grad(nll, leaf, retain_graph=True))]


def sgd_kernels(x, y) -> list[Kernel]:
    model, opt, xb, yb, step = _ours_parts("sgd", x, y)
    parts = [*_matmuls(model, xb, yb, model.theta), ("optimizer", opt.step), ("step", step)]
    return [("SGD", k, f) for k, f in parts]


def bbb_kernels(x, y) -> list[Kernel]:
    """BBB's step in its kernels: weight noise, fused sample + KL forward and backward (compiled, as
    trials run them), the matmuls on the sampled weights, Adam over mu and rho."""
    model, opt, xb, yb, step = _ours_parts("bbb", x, y)
    fwd, bwd, noise = kernels.kl_kernels(True)
    mu, rho, n = model.mu.detach(), model.rho.detach(), model.n_params
    key = kernels.weight_noise_key(mu.device)
    consts = model.prior.kl_constants()
    eps = noise(n, key)
    with torch.no_grad():
        w, kl, *saved = fwd(mu, rho, eps, *consts)
    g_w, g_kl = torch.randn_like(w), torch.ones(())
    no_grad = torch.no_grad()  # as inside the autograd.Function, so the compiled kernels are reused, not recompiled
    parts = [("noise", lambda: noise(n, key)), ("sample+KL fwd", no_grad(lambda: fwd(mu, rho, eps, *consts))),
             ("sample+KL bwd", no_grad(lambda: bwd(g_w, g_kl, *saved))), *_matmuls(model, xb, yb, w),
             ("optimizer", opt.step), ("step", step)]
    return [("BBB", k, f) for k, f in parts]


def svd_kernels(x, y) -> list[Kernel]:
    """Sparse VD's step in its kernels: the fused per-weight terms (variance, KL) forward and backward
    (compiled, as trials run them), the matmuls with local reparameterisation, Adam over theta and log sigma^2."""
    from .methods import sparse_vd
    model, opt, xb, yb, step = _ours_parts("sparse_vd", x, y)
    fwd, bwd = sparse_vd.vd_kernels(True)
    theta, ls, in_kl = model.theta.detach(), model.log_sigma2.detach(), model.is_weight
    with torch.no_grad():
        var, kl, *saved = fwd(theta, ls, in_kl)
    g_var, g_kl = torch.randn_like(var), torch.ones(())
    leaf = theta.clone().requires_grad_()
    nll = F.cross_entropy(model(xb, leaf, var), yb)
    no_grad = torch.no_grad()
    parts = [("terms fwd", no_grad(lambda: fwd(theta, ls, in_kl))),
             ("terms bwd", no_grad(lambda: bwd(g_var, g_kl, theta, var, *saved, in_kl))),
             ("matmuls fwd", lambda: F.cross_entropy(model(xb, leaf, var), yb)),
             ("matmuls bwd", lambda: torch.autograd.grad(nll, leaf, retain_graph=True)),
             ("optimizer", opt.step), ("step", step)]
    return [("Sparse VD", k, f) for k, f in parts]


def reference_passes(n: int) -> list[Kernel]:
    """Plain eager elementwise passes over n floats, the yardstick the kernels are flagged against."""
    v = torch.rand(n) + 0.5
    return [("ref", f"{op} pass", lambda op=op: getattr(torch, op)(v)) for op in ("exp", "log", "log1p")]


def cpu_info() -> dict[str, object]:
    """CPU model, the vector ISA torch dispatches to, and the AVX-512 flag, for the table header."""
    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "vector_isa": torch.backends.cpu.get_cpu_capability(),
            "avx512f": "avx512f" in flags, "cores": os.cpu_count(), "threads": torch.get_num_threads()}


def breakdown(x, y, rounds: int, steps: int) -> dict[str, dict[str, dict[str, float | None]]]:
    """Median ms of each kernel of each method (interleaved rounds), its share of the method's
    step, and how many plain exp passes over the same number of floats it costs."""
    n = build_model(TrialConfig(method="sgd")).n_params
    table = [*sgd_kernels(x, y), *bbb_kernels(x, y), *svd_kernels(x, y), *reference_passes(n)]
    ms = race({f"{m}/{k}": f for m, k, f in table}, rounds, steps, warmup=5)
    ms = {(m, k): t for (m, _, k), t in ((key.partition("/"), t) for key, t in ms.items())}
    methods = {m: [k for m2, k, _ in table if m2 == m and k != "step"] for m, _, _ in table}
    for m, ks in methods.items():  # "other": what the kernels leave of the step (batch gather, autograd, zero_grad)
        if (m, "step") in ms:
            ms[m, "other"] = ms[m, "step"] - sum(ms[m, k] for k in ks)
            ks += ["other", "step"]
    def row(m, k):
        return {"ms": ms[m, k], "share": ms[m, k] / ms[m, "step"] if (m, "step") in ms else None,
                "x_exp": ms[m, k] / ms["ref", "exp pass"]}
    return {m: {k: row(m, k) for k in ks} for m, ks in methods.items()}


def print_breakdown(bd: dict[str, dict[str, dict]], cpu: dict[str, object]) -> list[str]:
    """The per-kernel table; returns the flagged kernels (elementwise, > FLAG_X_EXP exp passes)."""
    print(f"\nper-kernel breakdown on {cpu['cpu_model']} ({cpu['vector_isa']}, avx512f={cpu['avx512f']}, "
          f"{cpu['threads']} threads), median ms")
    print(f"{'method':7} {'kernel':16} {'ms':>8} {'% of step':>10} {'x exp pass':>11}")
    flagged = []
    for m, parts in bd.items():
        for k, v in parts.items():
            flag = k not in NOT_ELEMENTWISE and k != "other" and v["x_exp"] > FLAG_X_EXP
            share = f"{100 * v['share']:9.1f}%" if v["share"] is not None else f"{'':10}"
            print(f"{m:7} {k:16} {v['ms']:8.3f} {share} {v['x_exp']:11.1f}" + ("  <-- slow" if flag else ""))
            flagged += [f"{m}/{k}"] if flag else []
    if flagged:
        print(f"  flagged (> {FLAG_X_EXP:g} exp passes): {', '.join(flagged)}")
    return flagged


def plain_sgd(batches: Callable[[], tuple]) -> Callable[[], None]:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 500), nn.ReLU(), nn.Linear(500, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step():
        xb, yb = batches()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def tensor_batches(x, y) -> Callable[[], tuple]:
    def nxt():
        idx = torch.randint(0, len(y), (B,))
        return x[idx], y[idx]
    return nxt


def loader_batches(root: Path) -> Callable[[], tuple]:
    """torchvision MNIST + ToTensor + shuffled DataLoader, cycled forever (the tutorial recipe)."""
    import torchvision
    ds = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=torchvision.transforms.ToTensor())
    loader = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True)
    it = iter(loader)

    def nxt():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)
    return nxt


class TutorialBayesLinear(nn.Module):
    """The textbook BBB layer: own mu/rho tensors, torch.distributions for log q and the mixture prior."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.w_mu = nn.Parameter(torch.empty(n_out, n_in).uniform_(-0.2, 0.2))
        self.w_rho = nn.Parameter(torch.empty(n_out, n_in).uniform_(-5, -4))
        self.b_mu = nn.Parameter(torch.empty(n_out).uniform_(-0.2, 0.2))
        self.b_rho = nn.Parameter(torch.empty(n_out).uniform_(-5, -4))
        self.log_q = self.log_p = 0.0

    def forward(self, x):
        pi, s1, s2 = PRIOR
        d = torch.distributions
        log_q = log_p = 0.0
        params = []
        for mu, rho in ((self.w_mu, self.w_rho), (self.b_mu, self.b_rho)):
            sigma = torch.log1p(torch.exp(rho))
            v = mu + sigma * torch.randn_like(mu)
            log_q = log_q + d.Normal(mu, sigma).log_prob(v).sum()
            mix = torch.stack([math.log(pi) + d.Normal(0, s1).log_prob(v), math.log(1 - pi) + d.Normal(0, s2).log_prob(v)])
            log_p = log_p + torch.logsumexp(mix, 0).sum()
            params.append(v)
        self.log_q, self.log_p = log_q, log_p
        return F.linear(x, *params)


def tutorial_bbb(batches: Callable[[], tuple], samples: int) -> Callable[[], None]:
    layers = nn.ModuleList([TutorialBayesLinear(784, 500), TutorialBayesLinear(500, 500), TutorialBayesLinear(500, 10)])
    opt = torch.optim.Adam(layers.parameters(), lr=LR)

    def forward(x):
        h = x.view(len(x), -1)
        for i, layer in enumerate(layers):
            h = layer(h)
            h = F.relu(h) if i < 2 else h
        return h

    def step():
        xb, yb = batches()
        loss = 0.0
        for _ in range(samples):
            out = forward(xb)
            kl = sum(layer.log_q - layer.log_p for layer in layers)
            loss = loss + (kl / 600 + F.cross_entropy(out, yb, reduction="sum")) / len(yb)
        opt.zero_grad()
        (loss / samples).backward()
        opt.step()
    return step


def blitz_bbb(batches, samples: int) -> Callable[[], None]:
    from blitz.modules import BayesianLinear
    from blitz.utils import variational_estimator
    pi, s1, s2 = PRIOR

    @variational_estimator
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            kw = dict(prior_sigma_1=s1, prior_sigma_2=s2, prior_pi=pi)
            self.l1, self.l2 = BayesianLinear(784, 500, **kw), BayesianLinear(500, 500, **kw)
            self.l3 = BayesianLinear(500, 10, **kw)

        def forward(self, x):
            return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=LR)

    def step():
        xb, yb = batches()
        loss = net.sample_elbo(xb, yb, nn.CrossEntropyLoss(), sample_nbr=samples, complexity_cost_weight=1 / 60000)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def bayesian_torch_bbb(batches, samples: int) -> Callable[[], None]:
    from bayesian_torch.layers import LinearReparameterization as L
    layers = nn.ModuleList([L(784, 500), L(500, 500), L(500, 10)])
    opt = torch.optim.Adam(layers.parameters(), lr=LR)

    def step():
        xb, yb = batches()
        loss = 0.0
        for _ in range(samples):
            h, kl = xb, 0.0
            for i, layer in enumerate(layers):
                h, k = layer(h)
                kl = kl + k
                h = F.relu(h) if i < 2 else h
            loss = loss + F.cross_entropy(h, yb) + kl / 60000
        opt.zero_grad()
        (loss / samples).backward()
        opt.step()
    return step


def race(contenders: dict[str, Callable[[], None]], rounds: int, steps: int, warmup: int) -> dict[str, float]:
    """Median ms/step of each contender, measured in interleaved rounds."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def inference(x) -> dict[str, float]:
    """Dense vs sparse forward of a 90 %-pruned 784-500-500-10 MLP (magnitude, weights only)."""
    torch.manual_seed(0)
    model = build_model(TrialConfig(method="sgd")).eval()
    keep, _ = prune.keep_mask(prune.scores(model, "magnitude", 0), prune.prunable(model, False), 0.9, "global", model)
    m, info = latency.measure(prune.pruned_copy(model, keep), x[:1000], "p90")
    return {**{k: v for k, v in m.items() if k.startswith("latency")}, **{k: v for k, v in info.items()}}


def _latency_worker(locked: bool, barrier, queue) -> None:
    """One 'trial' timing a 90 %-pruned model with 1 thread, as a cpus-per-trial=1 trial would."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(TrialConfig(method="sgd")).eval()
    keep, _ = prune.keep_mask(prune.scores(model, "magnitude", 0), prune.prunable(model, False), 0.9, "global", model)
    pruned, x = prune.pruned_copy(model, keep), torch.rand(1000, 784)
    barrier.wait()  # both start their latency phase at the same moment
    with torch.no_grad():
        m, _ = (latency.measure if locked else latency._measure)(pruned, x, "p90", 0)
    queue.put({k: v for k, v in m.items() if k.startswith("latency")})


def isolation() -> dict[str, dict[str, float]]:
    """Latency measured alone, by two concurrent trials without the node lock, and with it."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    out = {}
    for name, n, locked in (("alone", 1, True), ("2 at once, no lock", 2, False), ("2 at once, node lock", 2, True)):
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_latency_worker, args=(locked, barrier, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        out[name] = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return out


class StackedMLP(nn.Module):
    """S independent 784-500-500-10 MLPs as one model: weights [S, out, in], batches [S, B, 784],
    baddbmm per layer. Adam is elementwise, so one Adam over the stacks equals S separate ones.
    Prototype for the 'several seeds per trial' question; measured here, not used by trials."""

    def __init__(self, seeds: int, bayes: bool):
        super().__init__()
        sizes = [784, 500, 500, 10]
        self.bayes = bayes
        shapes = [(seeds, o, i) for i, o in zip(sizes[:-1], sizes[1:])] + [(seeds, o) for o in sizes[1:]]
        self.mu = nn.ParameterList([nn.Parameter(torch.empty(s).uniform_(-0.05, 0.05)) for s in shapes])
        self.rho = nn.ParameterList([nn.Parameter(torch.full(s, -4.5)) for s in shapes]) if bayes else None

    def loss(self, x, y):  # x [S, B, 784], y [S, B]
        from .kernels import Prior, kl_kernels, sample_and_kl, weight_noise_key
        kl = 0.0
        ws = list(self.mu)
        if self.bayes:  # the suite's own fused sample+KL over all S x P weights at once
            mu = torch.cat([p.flatten() for p in self.mu])
            rho = torch.cat([p.flatten() for p in self.rho])
            eps = kl_kernels(True)[2](mu.numel(), weight_noise_key(mu.device))
            w, kl = sample_and_kl(mu, rho, eps, Prior(*PRIOR), True)
            ws = [v.view(p.shape) for v, p in zip(w.split([p.numel() for p in self.mu]), self.mu)]
        h = x
        for i in range(3):
            h = torch.baddbmm(ws[3 + i][:, None, :], h, ws[i].transpose(1, 2))
            h = F.relu(h) if i < 2 else h
        nll = F.cross_entropy(h.reshape(-1, 10), y.reshape(-1)) * len(x)  # sum over seeds of each seed's mean
        return nll + kl / 60000


def batched_seeds(x, y, counts=(1, 2, 4, 8), rounds: int = 5, steps: int = 10) -> dict[str, float]:
    """ms per seed-step of S seeds trained as one stacked model vs the suite's single-seed step."""
    contenders = {}
    for bayes in (False, True):
        for s in counts:
            model = StackedMLP(s, bayes)
            opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)

            def step(model=model, opt=opt, s=s):
                idx = torch.randint(0, len(y), (s, B))
                loss = model.loss(x[idx], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            contenders[f"{'BBB' if bayes else 'SGD'} x{s}"] = step
    ms = race(contenders, rounds, steps, warmup=5)
    return {k: v / int(k.split("x")[1]) for k, v in ms.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per contender per round (default 15)")
    ap.add_argument("--samples", type=int, default=1, help="BBB weight samples per step, the same for every BBB (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--data-dir", default=None, help="dataset cache (default: $BPB_DATA_DIR or ~/.cache/bayes-prune-bench)")
    ap.add_argument("--json", default="bench_results/bench.json", help="where to write the results")
    ap.add_argument("--batched-seeds", action="store_true",
                    help="also time S seeds trained as one stacked model (S = 1, 2, 4, 8), per seed-step")
    ap.add_argument("--isolation", action="store_true",
                    help="also measure whether concurrent trials' latency phases disturb each other (with/without the node lock)")
    args = ap.parse_args(argv)
    flushed = flush_denormals()  # as trials train (suite/fpmode.py): every contender gets it
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_dir).resolve() if args.data_dir else default_data_dir()
    ensure("mnist", root)
    a = load_arrays("mnist", root)
    x = torch.tensor(a.x_train, dtype=torch.float32).reshape(60000, -1) / 255
    y = torch.tensor(a.y_train, dtype=torch.int64)
    s = args.samples
    contenders: dict[str, Callable[[], None]] = {
        "ours SGD": ours("sgd", x, y),
        f"ours BBB ({s} sample)": ours("bbb", x, y, s),
        f"ours BBB eager ({s} sample)": ours("bbb", x, y, s, compile=False),
        "ours Sparse VD": ours("sparse_vd", x, y),
        "plain SGD (tensor loop)": plain_sgd(tensor_batches(x, y)),
        "plain SGD (DataLoader)": plain_sgd(loader_batches(root)),
        f"tutorial BBB (DataLoader, {s} sample)": tutorial_bbb(loader_batches(root), s),
    }
    missing = []
    for name, make in ((f"BLiTZ BBB ({s} sample)", blitz_bbb), (f"bayesian-torch BBB ({s} sample)", bayesian_torch_bbb)):
        try:
            contenders[name] = make(tensor_batches(x, y), s)
        except ImportError as e:
            missing.append(f"{name}: {e} (pip install -e '.[bench]')")
    cpu, load = {**cpu_info(), "denormals_flushed": flushed}, [os.getloadavg()[0]]
    print(f"torch {torch.__version__} on {cpu['cpu_model']} ({cpu['vector_isa']}, {cpu['cores']} cores), "
          f"{cpu['threads']} threads; load average {load[0]:.1f}; {len(contenders)} contenders x "
          f"{args.rounds} rounds x {args.steps} steps")
    steps = race(contenders, args.rounds, args.steps, warmup=10)
    base = steps["ours SGD"]
    print(f"\n{'training step (batch 100, 784-500-500-10)':44} {'ms/step':>9} {'x ours SGD':>11}")
    for name, ms in steps.items():
        print(f"{name:44} {ms:9.2f} {ms / base:11.2f}")
    for line in missing:
        print(f"  not measured: {line}")
    kernel_ms = breakdown(x, y, args.rounds, args.steps)
    flagged = print_breakdown(kernel_ms, cpu)
    inf = inference(x)
    print(f"\n{'inference at 90 % sparsity':44} {'dense ms':>9} {'sparse ms':>10} {'kernel':>10}")
    for bsz in latency.BATCHES:
        print(f"{'batch ' + str(bsz):44} {inf[f'latency_dense_b{bsz}_ms_p90']:9.3f} "
              f"{inf[f'latency_sparse_b{bsz}_ms_p90']:10.3f} {inf[f'sparse_format_b{bsz}_p90']:>10}")
    stacked = batched_seeds(x, y) if args.batched_seeds else {}
    if stacked:
        print(f"\n{'several seeds as one stacked model':44} {'ms/seed-step':>12}")
        for name, ms in stacked.items():
            print(f"{name:44} {ms:12.2f}")
    iso = isolation() if args.isolation else {}
    if iso:
        keys = list(iso["alone"])
        print(f"\n{'latency isolation (1 thread per trial), median ms':50} " + " ".join(f"{k[8:-7]:>12}" for k in keys))
        for name, m in iso.items():
            print(f"{name:50} " + " ".join(f"{m[k]:12.3f}" for k in keys))
    load.append(os.getloadavg()[0])
    targets = speed_targets(steps, s)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"train_ms_per_step": steps, "kernel_breakdown": kernel_ms, "flagged_kernels": flagged,
                               "targets": targets, "inference_p90": inf, "latency_isolation": iso,
                               "batched_seeds_ms_per_seed_step": stacked, **cpu, "load_average": load,
                               "samples": s, "torch": torch.__version__, "not_measured": missing}, indent=1))
    print(f"\nwrote {out}")
    ratios = [f"{t['name']} = {t['value']:.2f} (target {t['op']} {t['target']}: {'met' if t['met'] else 'NOT met'})"
              for t in targets]
    ratios += [f"ours SGD / plain tensor loop = {base / steps['plain SGD (tensor loop)']:.2f}",
               f"sparse/dense b1000 @90% = {inf['latency_sparse_b1000_ms_p90'] / inf['latency_dense_b1000_ms_p90']:.2f}",
               f"load average {load[0]:.1f} -> {load[1]:.1f} on {cpu['cores']} cores"]
    print("RATIOS: " + "; ".join(ratios))
    return 0


def speed_targets(steps: dict[str, float], s: int) -> list[dict[str, object]]:
    """The speed targets (issue 12; Sparse VD's from issue 9) as ratios of median step times (peers that
    are not installed are skipped)."""
    ours_bbb = steps[f"ours BBB ({s} sample)"]
    checks = [("ours BBB / ours SGD", ours_bbb / steps["ours SGD"], "<=", 2.0),
              ("ours Sparse VD / ours SGD", steps["ours Sparse VD"] / steps["ours SGD"], "<=", 2.5)]
    for peer, target in (("BLiTZ", 4.0), ("bayesian-torch", 2.5)):
        if f"{peer} BBB ({s} sample)" in steps:
            checks.append((f"{peer} BBB / ours BBB", steps[f"{peer} BBB ({s} sample)"] / ours_bbb, ">=", target))
    return [{"name": n, "value": v, "op": op, "target": t, "met": v <= t if op == "<=" else v >= t}
            for n, v, op, t in checks]


if __name__ == "__main__":
    raise SystemExit(main())
