"""The training steps raced against each other (MNIST, batch 100, 784-500-500-10, Adam): the suite's
own, plain PyTorch SGD, and the textbook per-layer BBB the original study used."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrialConfig
from ..data import ensure, load_arrays
from ..methods import build as build_model
from ..train import make_optimizer

B, LR = 100, 1e-4
HIDDEN = TrialConfig.hidden  # the suite's default widths (500, 500): the main race's and the peers'
PRIOR = (0.5, 1.0, math.exp(-6))  # BBB's scale-mixture prior (pi, sigma1, sigma2), the suite's default
Step = Callable[[], None]
Batches = Callable[[], tuple]


def mnist(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's 60k training images as float [60000, 784] in [0, 1] and their int64 labels."""
    ensure("mnist", root)
    a = load_arrays("mnist", root)
    return torch.tensor(a.x_train, dtype=torch.float32).reshape(60000, -1) / 255, torch.tensor(a.y_train, dtype=torch.int64)


def ours_model(method: str, samples: int = 1, compile: bool = True, hidden: tuple[int, ...] = HIDDEN):
    """The suite's model and optimiser for a method, as a trial builds them."""
    cfg = TrialConfig(method=method, train_samples=samples, compile=compile, hidden=hidden)
    model = build_model(cfg)
    return model.train(), make_optimizer(cfg, model)


def train_step(model, opt, x, y) -> Step:
    """One training step on a random batch of (x, y), as suite.train runs it."""
    n = len(y)

    def step():
        idx = torch.randint(0, n, (B,))
        loss, _, _ = model.objective(x[idx], y[idx], 1.0 / 600)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def ours(method: str, x, y, samples: int = 1, compile: bool = True, hidden: tuple[int, ...] = HIDDEN) -> Step:
    return train_step(*ours_model(method, samples, compile, hidden), x, y)


def tensor_batches(x, y) -> Batches:
    def nxt():
        idx = torch.randint(0, len(y), (B,))
        return x[idx], y[idx]
    return nxt


def loader_batches(root: Path) -> Batches:
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


def plain_sgd(batches: Batches) -> Step:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 500), nn.ReLU(), nn.Linear(500, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step():
        xb, yb = batches()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


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


def tutorial_bbb(batches: Batches, samples: int) -> Step:
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
