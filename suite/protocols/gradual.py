"""gradual: Zhu & Gupta 2017's gradual pruning ("To prune, or not to prune"). For each level > 0 a
copy of the trained model is retrained for finetune_epochs at finetune_lr (default lr) while its
mask is recomputed every gradual_interval steps from the method's score on the current weights
(magnitude, SNR for BBB, log alpha for Sparse VD, ...), the sparsity rising on the cubic schedule
    s_k = s_f (1 - (1 - k / n)^3),   k = 1..n,   n = floor(span / gradual_interval)
over the steps from the start of epoch a to the end of epoch b (gradual_epochs [a, b]); training
then continues at the final mask s_f. Zhu & Gupta prune while the learning rate is still high and
let the net recover at the final sparsity; by default the sparsity rises over the first 60 % of
retraining ([1, ceil(0.6 finetune_epochs)], as the suite's LeNet recipe [1, 30] of 50), with a mask
update every 100 steps (their Delta t; they found 100 to 1000 steps alike). A pruned weight stays
pruned (held: exactly 0 in the forward pass, zero gradient) and its Adam moments are zeroed when it
is pruned, so they stay 0.

One model per level, each from the trained model, as Zhu & Gupta train one model per target
sparsity: the levels stay independent (like finetune's, at the same retraining budget) and each is
resumable. Cost: finetune_epochs per level > 0."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from . import register
from .base import forget_pruned
from .finetune import Finetune, RetrainParams, retrain_lr


@dataclass(frozen=True)
class GradualParams(RetrainParams):
    gradual_epochs: tuple[int, ...] = ()
    """[a, b]: Zhu & Gupta's cubic rise from the start of retraining epoch a to the end of b; [] = [1, ceil(0.6 N)]."""
    gradual_interval: int = 100
    """Optimizer steps between mask updates (Zhu & Gupta's Delta t)."""

    def __post_init__(self):
        if not self.gradual_epochs and self.finetune_epochs >= 1:  # the default span, spelled out (it is in the key)
            object.__setattr__(self, "gradual_epochs", (1, math.ceil(0.6 * self.finetune_epochs)))


def cubic_levels(final: float, n: int) -> list[float]:
    """The sparsity after each of the n mask updates: s_f (1 - (1 - k/n)^3), k = 1..n."""
    return [final * (1 - (1 - k / n) ** 3) for k in range(1, n + 1)]


@register
class Gradual(Finetune):  # a finetune whose mask tightens during retraining: same levels, same cost
    name, order = "gradual", 30.0
    Params = GradualParams
    label_suffix, order_offset, baseline_color = " + gradual", 0.6, "#393b79"

    @classmethod
    def check(cls, cfg, fail) -> None:
        super().check(cfg, fail)
        a_b = cfg.gradual_epochs
        if len(a_b) != 2 or not 1 <= a_b[0] <= a_b[1] <= cfg.finetune_epochs:
            fail("gradual_epochs", list(a_b), f"[a, b] with 1 <= a <= b <= finetune_epochs={cfg.finetune_epochs} "
                                             "with protocol=gradual")
        if cfg.gradual_interval < 1 or not cls.schedule(cfg, 1.0):
            fail("gradual_interval", cfg.gradual_interval, "an integer >= 1, at most the steps of gradual_epochs' span")

    @classmethod
    def schedule(cls, cfg, level: float) -> dict[int, float]:
        """Step t of the level's retraining (1-based) -> the sparsity its mask update sets after it:
        t0 = the steps before epoch a, n = floor(span / gradual_interval) updates over the span of
        epochs a..b, the k-th after step t0 + k gradual_interval (the last at most at the end of b)."""
        n_train = cfg.train_subset or 60000 - cfg.val_size
        n_batches = -(-n_train // cfg.batch_size)
        a, b = cfg.gradual_epochs
        t0, n = (a - 1) * n_batches, (b - a + 1) * n_batches // cfg.gradual_interval
        return {t0 + k * cfg.gradual_interval: s for k, s in enumerate(cubic_levels(level, n), 1)}

    def prune_level(self, i, level, keep, progress):
        if not self.retrains(level):
            return super().prune_level(i, level, keep, progress)
        cfg, schedule = self.cfg, self.schedule(self.cfg, level)
        m = copy.deepcopy(self.model)

        def on_step(opt: torch.optim.Optimizer, t: int) -> None:
            if t in schedule:
                self.tighten(m, schedule[t])
                forget_pruned(opt, m.held)
        # each level's own RNG stream, apart from training's and the other levels'
        self.retrain(m, progress, cfg.finetune_epochs, retrain_lr(cfg), 100_000 * (i + 1), on_step)
        return m, {}
