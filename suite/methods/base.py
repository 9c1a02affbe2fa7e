"""The method interface: one flat parameter layout, one forward pass, and what a method adds to it.

Every model keeps all weights and biases in ONE flat vector per parameter kind (theta for SGD; mu
and rho for BBB; theta and log sigma^2 for Sparse VD), and each layer reads a view of it. Why:
sampling, KL terms and Adam then each run as one vectorised pass over ~650k numbers instead of six
small ones, and pruning is one mask over one vector that the forward pass provably reads (there is
no second copy of a weight to forget; ARCHITECTURE.md, "the pruning pitfall").

Layout of the flat vector for sizes [784, 500, 500, 10]:
  [W1 (500x784), b1 (500), W2 (500x500), b2 (500), W3 (10x500), b3 (10)]  -> 648,010 numbers.

A method is a subclass of Method plus a small frozen dataclass of its own settings (Params), and is
registered with @register in its own file (ARCHITECTURE.md, "How to add a method").
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..params import Params
from .local_reparam import local_reparam_linear


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


@dataclass(frozen=True)
class KLParams(Params):
    """Settings shared by the methods whose objective has a KL regulariser (BBB, Sparse VD)."""

    kl_weighting: str = "blundell"
    """KL weight per minibatch i of M: blundell (2^(M-i)/(2^M-1), Blundell et al. 2015 eq. 9) or uniform (1/M)."""
    kl_warmup: tuple[int, ...] = ()
    """KL warm-up [a, b]: the KL weight is scaled by 0 up to epoch a, rising linearly to 1 at epoch b; [] = none."""

    def check(self, fail) -> None:
        if self.kl_weighting not in ("blundell", "uniform"):
            fail("kl_weighting", self.kl_weighting, "blundell | uniform")
        if self.kl_warmup and (len(self.kl_warmup) != 2 or not 0 <= self.kl_warmup[0] < self.kl_warmup[1]):
            fail("kl_warmup", list(self.kl_warmup), "[] or [a, b] with 0 <= a < b (epochs)")

    def kl_scale(self, epoch: int) -> float:
        """The warm-up factor of epoch (1-based): 0 until a, linear to 1 at b, then 1."""
        if not self.kl_warmup:
            return 1.0
        a, b = self.kl_warmup
        return min(1.0, max(0.0, (epoch - a) / (b - a)))

    def kl_weights(self, n_batches: int, epoch: int) -> list[float]:
        """KL weight of minibatch i = 1..M in this epoch; without warm-up both schemes sum to 1 over
        an epoch. blundell: 2^(M-i) / (2^M - 1) (Blundell et al. 2015, eq. 9), written as
        2^-i / (1 - 2^-M) so it cannot overflow for large M; uniform: 1/M."""
        s = self.kl_scale(epoch)
        if self.kl_weighting == "uniform":
            return [s / n_batches] * n_batches
        norm = 1.0 - 2.0 ** -n_batches
        return [s * 2.0 ** -i / norm for i in range(1, n_batches + 1)]


class Method(nn.Module):
    """Base of every method: flat layout, the one forward pass, and the defaults of every hook.

    A subclass sets the class attributes below, creates its flat nn.Parameters in init_parameters(),
    and overrides objective(); everything else has a default that fits a deterministic network."""

    name: ClassVar[str]                       # registry name, the `method` grid value
    Params: ClassVar[type[Params]] = Params   # the method's own settings
    scores: ClassVar[tuple[str, ...]] = ("magnitude",)  # pruning scores it offers (random is always offered)
    has_kl: ClassVar[bool] = False            # objective has a regulariser: train_kl is logged
    has_mc: ClassVar[bool] = False            # predict_mc exists: test_*_mc_pNN are logged
    has_natural: ClassVar[bool] = False       # natural_keep exists: protocol natural can report level `nat`
    compiled_kernels: ClassVar[bool] = False  # uses torch.compile when cfg.compile (needs a C++ compiler on CPU)
    weight_noise: ClassVar[str] = ""          # generator of per-weight training noise, if any (run tag weight_noise)
    color: ClassVar[str] = "#7f7f7f"          # plot colour (run tag `color`)
    order: ClassVar[float] = 100.0            # position in tables and legends (run tag `label_order`)
    # the method's own default for a common TrialConfig field, where the common one does not train it
    # (Sparse VD: lr); a config that does not set the field gets this value
    field_defaults: ClassVar[dict[str, object]] = {}

    def __init__(self, cfg):
        super().__init__()
        self.cfg, self.p = cfg, cfg.params
        self.sizes = [784, *cfg.hidden, 10]
        self.layout = make_layout(self.sizes)
        self.n_params = self.layout[-1].end
        self.n_groups = sum(self.sizes[:-1])  # input units of every layer (a unit = one column W_i[:, j])
        self.dropout, self.input_dropout = 0.0, False
        self.held: Tensor | None = None  # bool [P] mask held during fine-tuning (hold_)
        self.init_parameters()

    # -- identity (run tags; suite.analysis reads them, it imports nothing from the training code)
    @classmethod
    def label(cls, cfg) -> str:
        """Human name of the configuration in tables and legends."""
        return cls.name

    @classmethod
    def label_order(cls, cfg) -> float:
        return cls.order

    @classmethod
    def label_color(cls, cfg) -> str:
        return cls.color

    @classmethod
    def is_baseline(cls, cfg) -> bool:
        """The configuration every other method is compared against in the report's claim check."""
        return False

    @classmethod
    def check(cls, cfg, fail) -> None:
        """Checks of the method's settings against the rest of the config (e.g. the depth); default none."""

    # -- parameters
    def init_parameters(self) -> None:
        raise NotImplementedError

    def uniform_init(self) -> Tensor:
        """nn.Linear's default init as one flat [P] vector: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        flat = torch.empty(self.n_params)
        for s in self.layout:
            bound = 1.0 / math.sqrt(self.sizes[s.layer])
            flat[s.start:s.end].uniform_(-bound, bound)
        return flat

    def weight_entries(self) -> Tensor:
        """Bool [P]: True on weight-matrix entries, False on biases."""
        mask = torch.zeros(self.n_params, dtype=torch.bool)
        for s in self.layout:
            mask[s.start:s.end] = not s.is_bias
        return mask

    # -- the one forward pass every method and every metric uses
    def forward(self, x: Tensor, flat: Tensor | None = None, var: Tensor | None = None,
                scale: Tensor | None = None) -> Tensor:
        """x: [B, 784] -> logits [B, 10], computed from the flat [P] weights `flat` (default: the point
        estimate). var: optional flat [P] weight variances; then every layer outputs a sample of its
        pre-activation, mean + sqrt(x^2 var) * eps (the local reparameterisation trick, Kingma,
        Salimans and Welling 2015, eq. 6; one fused layer, suite/methods/local_reparam.py), instead of
        the deterministic product. scale: optional [B, G] per-example factors of every layer's inputs
        (G = the layers' input widths summed; Bayesian Compression's group scales, drawn per example)."""
        flat = self.point_weights() if flat is None else flat
        sizes = [math.prod(s.shape) for s in self.layout]
        # split (not slicing) so backward is a single concatenation of the gradients.
        parts, vparts = flat.split(sizes), (var.split(sizes) if var is not None else None)
        sparts = scale.split(self.sizes[:-1], dim=1) if scale is not None else None
        h = x
        if self.input_dropout and self.dropout > 0:
            h = F.dropout(h, self.dropout, self.training)
        n_layers = len(self.sizes) - 1
        for i in range(n_layers):
            shape = self.layout[2 * i].shape
            if sparts is not None:
                h = h * sparts[i]
            if vparts is None:
                h = F.linear(h, parts[2 * i].view(shape), parts[2 * i + 1])
            else:
                h = local_reparam_linear(h, parts[2 * i].view(shape), parts[2 * i + 1],
                                         vparts[2 * i].view(shape), vparts[2 * i + 1])
            if i < n_layers - 1:
                h = F.dropout(F.relu(h), self.dropout, self.training) if self.dropout > 0 else F.relu(h)
        return h

    def point_weights(self) -> Tensor:
        """The flat [P] weights of a deterministic prediction (theta; the posterior mean for BBB)."""
        raise NotImplementedError

    # -- training hooks
    def objective(self, x: Tensor, y: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """(loss, nll, kl) for one minibatch; kl is None for methods without a regulariser."""
        nll = F.cross_entropy(self(x), y)
        return nll, nll, None

    def kl_weights(self, n_batches: int, epoch: int) -> list[float]:
        """The KL weight of each minibatch of an epoch: from the method's KLParams (weighting x warm-up),
        unused zeros for methods without a KL."""
        return self.p.kl_weights(n_batches, epoch) if isinstance(self.p, KLParams) else [0.0] * n_batches

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. to clip a parameter); default: nothing."""

    def compile_warmup(self, x: Tensor, y: Tensor) -> None:
        """Trigger torch.compile's code generation (forward and backward) on one batch so it is not
        timed as training; parameters are untouched and the gradients dropped."""
        if self.compiled_kernels and self.cfg.compile:
            self.objective(x, y, 0.0)[0].backward()
            self.zero_grad(set_to_none=True)

    # -- prediction
    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities [N, 10] of the deterministic prediction (eval mode: no dropout)."""
        return torch.softmax(self(x), dim=-1)

    @torch.no_grad()
    def predict_mc(self, x: Tensor, n: int) -> Tensor:
        """Monte Carlo ensemble: mean of softmax over n weight samples, [N, 10] (if has_mc)."""
        return torch.stack([torch.softmax(self(x, self.sample()), -1) for _ in range(n)]).mean(0)

    def weight_variance(self) -> Tensor | None:
        """Flat [P] posterior variance of each effective weight (0 where pruned and for biases); None for
        point-estimate methods. It sets a layer's fixed-point precision (suite.evaluate.bits: Louizos, Ullrich & Welling 2017)."""
        return None

    @torch.no_grad()
    def sample(self) -> Tensor | None:
        """One weight sample [P] for stochastic methods (None: deterministic). Sparsity is measured on
        it, so a pruned weight whose noise is not exactly 0 would be caught."""
        return None

    # -- pruning
    def score(self, kind: str) -> Tensor:
        """Flat [P] pruning score, lower = pruned first; kind is one of self.scores."""
        if kind == "magnitude":
            return self.point_weights().detach().abs()
        raise ValueError(f"{self.name} offers no pruning score {kind!r}")

    @torch.no_grad()
    def prune_(self, keep: Tensor) -> None:
        """Zero the pruned entries (keep: bool [P]) in every tensor the forward pass reads; a pruned
        stochastic weight must sample to exactly 0."""
        raise NotImplementedError

    # -- input units: unit j of layer i is the column W_i[:, j] (a pixel for layer 0, a hidden unit for
    # the later layers); a [G] tensor holds one value per unit, layer by layer (G = n_groups)
    def group_slices(self) -> list[slice]:
        """The units of each layer within a [G] tensor."""
        ends = [0, *itertools.accumulate(self.sizes[:-1])]
        return [slice(a, b) for a, b in zip(ends, ends[1:])]

    def per_weight(self, g: Tensor, bias: float) -> Tensor:
        """[G] per-unit values -> [P]: each weight W_i[o, j] gets its input unit's g, each bias `bias`."""
        parts = []
        for sl, seg in zip(self.group_slices(), self.layout[::2]):
            n_out, n_in = seg.shape
            parts += [g[sl].expand(n_out, n_in).reshape(-1), g.new_full((n_out,), bias)]
        return torch.cat(parts)

    def units_keep(self, g: Tensor) -> Tensor:
        """Bool [G] kept units -> bool [P]: W_i[o, j] is kept when input unit j is kept and, for a hidden
        output o, o's own unit as an input of the next layer is (a unit nothing reads needs no inputs:
        Louizos et al. 2017's masks); a hidden unit's bias goes with it; the output units always stay.
        A hidden unit left with no input is a constant the compaction folds."""
        ones = torch.ones(self.sizes[-1], dtype=torch.bool, device=g.device)
        parts = []
        for sl, out in zip(self.group_slices(), [*self.group_slices()[1:], None]):
            o = g[out] if out is not None else ones
            parts += [(o[:, None] & g[None, sl]).reshape(-1), o]
        return torch.cat(parts)

    def reduce_units(self, values: Tensor, how: str, live: Tensor | None = None) -> Tensor:
        """[P] -> [G]: each unit's "rms" (root mean square), "mean" or "max" of `values` over its column's
        entries that are `live` (bool [P], default all) and not NaN (a pruned BBB weight's SNR is 0 / 0);
        -inf for a unit with none."""
        out = []
        for seg in self.layout[::2]:
            v = values[seg.start:seg.end].view(seg.shape)
            ok = ~torch.isnan(v) if live is None else live[seg.start:seg.end].view(seg.shape) & ~torch.isnan(v)
            if how == "max":
                out.append(v.masked_fill(~ok, float("-inf")).amax(0))
                continue
            n = ok.sum(0)
            r = torch.where(ok, v * v if how == "rms" else v, 0.0).sum(0) / n.clamp_min(1)
            out.append((r.sqrt() if how == "rms" else r).masked_fill(n == 0, float("-inf")))
        return torch.cat(out)

    def unit_score(self, kind: str) -> Tensor:
        """[G] score of every input unit for prune_structure units, lower = removed first; kind is one of
        self.scores. Default: the root mean square of score(kind) over the unit's weights still held (a
        score >= 0 such as |w| or SNR): a mean, so units of fan-out 500 and 10 compare across layers
        (magnitude: the unit's L2 norm / sqrt(fan-out)). A method whose score can be negative
        overrides it (the mean: Sparse VD's -log alpha)."""
        return self.reduce_units(self.score(kind).float(), "rms", self.held)

    def natural_keep(self) -> Tensor | None:
        """Bool [P] mask of the weights the method itself keeps (if has_natural), else None."""
        return None

    @torch.no_grad()
    def hold_(self, keep: Tensor) -> None:
        """Prune with `keep` and hold the mask through further training (the finetune protocol): the
        training loop zeroes the pruned entries' gradients, so with a fresh Adam their moments stay 0
        and the weights stay exactly 0; objectives with a KL leave the pruned weights out of it."""
        self.prune_(keep)
        self.held = keep.to(self.point_weights().device)
