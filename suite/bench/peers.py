"""The peer libraries' BBB steps, same architecture, prior and samples per step: BLiTZ
(blitz-bayesian-pytorch) and bayesian-torch. Both come from the `bench` extra; a peer that is not
installed is reported as not measured, with the command that installs it, never faked."""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from .steps import LR, PRIOR, Batches, Step

INSTALL = "pip install -e '.[bench]'"


def blitz_bbb(batches: Batches, samples: int) -> Step:
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


def bayesian_torch_bbb(batches: Batches, samples: int) -> Step:
    """bayesian-torch's LinearReparameterization: closed-form Gaussian KL, no mixture prior."""
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


# peer name -> (importable module, distribution on PyPI, step builder)
PEERS = {"BLiTZ": ("blitz", "blitz-bayesian-pytorch", blitz_bbb),
         "bayesian-torch": ("bayesian_torch", "bayesian-torch", bayesian_torch_bbb)}


def missing_peers() -> dict[str, str]:
    """{peer: why it cannot be measured} for every peer whose package is not installed."""
    return {name: f"{dist} is not installed ({INSTALL})"
            for name, (module, dist, _) in PEERS.items() if importlib.util.find_spec(module) is None}


def peer_steps(batches: Batches, samples: int) -> tuple[dict[str, Step], list[str]]:
    """({contender name: step} of the installed peers, [one line per peer not measured])."""
    steps, missing = {}, []
    absent = missing_peers()
    for name, (_, _, make) in PEERS.items():
        label = f"{name} BBB ({samples} sample)"
        if name in absent:
            missing.append(f"{label}: {absent[name]}")
            continue
        try:
            steps[label] = make(batches, samples)
        except ImportError as e:  # installed but broken (e.g. a dependency of the peer is missing)
            missing.append(f"{label}: {e} ({INSTALL})")
    return steps, missing
