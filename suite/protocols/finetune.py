"""finetune: Han et al. 2015's prune-and-retrain, one shot per level. For each level > 0 a copy of
the trained model is pruned, holds its mask (Method.hold_: the pruned entries' gradients are zeroed
before every step, so with a fresh Adam their moments stay 0 and the weights exactly 0) and is
retrained for finetune_epochs at a constant finetune_lr (default lr) in the one training loop.
Resumable per level. Metrics: the fine-tuned model's; oneshot_{acc,nll,ece}_pNN are the same copy
before fine-tuning and finetune_val_acc_pNN its last validation accuracy."""
from __future__ import annotations

from dataclasses import dataclass

from .. import prune
from ..evaluate import metrics
from . import Params, register
from .base import Protocol


@dataclass(frozen=True)
class RetrainParams(Params):
    """The settings of every protocol that retrains (finetune, gradual, iterative)."""

    finetune_epochs: int = 0
    """Retraining epochs per level (finetune, gradual) or per pruning round (iterative): >= 1, no default (the grid's budget)."""
    finetune_lr: float | None = None
    """Learning rate of retraining (constant); None = lr."""

    def check(self, fail) -> None:
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            fail("finetune_lr", self.finetune_lr, "a number > 0, or null for lr")


def check_retraining(cfg, fail) -> None:
    """At least one retraining epoch per level or round. No default: the papers give no retraining
    budget for these nets, and the comparison depends on it, so a grid states it."""
    if cfg.finetune_epochs < 1:
        fail("finetune_epochs", cfg.finetune_epochs, f"an integer >= 1 with protocol={cfg.protocol}")


def retrain_lr(cfg) -> float:
    """The constant learning rate of retraining: finetune_lr, or lr when it is None."""
    return cfg.lr if cfg.finetune_lr is None else cfg.finetune_lr


@register
class Finetune(Protocol):
    name, order = "finetune", 10.0
    Params = RetrainParams
    label_suffix, order_offset, baseline_color = " + fine-tune", 0.5, "#17becf"

    @classmethod
    def check(cls, cfg, fail) -> None:
        check_retraining(cfg, fail)

    @classmethod
    def retrains(cls, level) -> bool:
        return level != 0

    @classmethod
    def extra_epochs(cls, cfg) -> int:
        return sum(cls.retrains(p) for p in cfg.sparsities) * cfg.finetune_epochs

    def prune_level(self, i, level, keep, progress):
        if not self.retrains(level):
            return super().prune_level(i, level, keep, progress)
        cfg, tag, x, y = self.cfg, prune.level_tag(level), self.data.x_test, self.data.y_test
        m = prune.pruned_copy(self.model, keep).eval()
        before = {f"oneshot_{k}_{tag}": v for k, v in metrics.classification(m.predict(x), y).items()}
        m.hold_(keep)
        # each level's own RNG stream, apart from training's and the other levels'
        history = self.retrain(m, progress, cfg.finetune_epochs, retrain_lr(cfg), seed_offset=100_000 * (i + 1))
        return m, {**before, f"finetune_val_acc_{tag}": history[-1]["val_acc"]}
