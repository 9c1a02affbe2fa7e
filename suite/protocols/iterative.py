"""iterative: Han et al. 2015's iterative pruning. One model passes the levels in ascending order:
each round prunes iterative_fraction of the remaining weights (the last round of a level stops
exactly at it) by the method's score on the current weights, then retrains finetune_epochs at
finetune_lr (default lr) with the mask held and a fresh optimiser; a level is evaluated and logged
when it is reached, and the next level's rounds start from that model. With rewind_epoch = r >= 0
the kept weights are reset after every prune to their values after training epoch r (0: the
initialisation), which the trial saved during training: Frankle et al. 2019's lottery tickets with
rewinding. Cost: finetune_epochs per round; round_targets says how many rounds each level takes."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from .. import prune
from . import register
from .base import Protocol
from .finetune import RetrainParams, check_retraining, retrain_lr


@dataclass(frozen=True)
class IterativeParams(RetrainParams):
    iterative_fraction: float = 0.5
    """Fraction of the remaining weights pruned per round (a level's last round stops at the level)."""
    rewind_epoch: int = -1
    """Reset the kept weights after every prune to those after training epoch r (0: init; Frankle et al. 2019); -1: none."""

    def check(self, fail) -> None:
        super().check(fail)
        if not 0 < self.iterative_fraction < 1:
            fail("iterative_fraction", self.iterative_fraction, "a fraction in (0, 1)")


def round_targets(levels: list[float], fraction: float) -> list[list[float]]:
    """For each level (ascending, in [0, 1)): the sparsity after each round that leads to it from
    the previous level, 1 - (1 - s)(1 - fraction) per round, the last one capped at the level."""
    out, s = [], 0.0
    for p in levels:
        rounds = []
        while s < p:
            s = min(p, 1 - (1 - s) * (1 - fraction))
            rounds.append(s)
        out.append(rounds)
    return out


@register
class Iterative(Protocol):
    name, order = "iterative", 40.0
    Params = IterativeParams
    label_suffix, order_offset, baseline_color = " + iterative", 0.7, "#637939"

    @classmethod
    def check(cls, cfg, fail) -> None:
        check_retraining(cfg, fail)
        if list(cfg.sparsities) != sorted(cfg.sparsities) or max(cfg.sparsities) >= 1:
            fail("sparsities", list(cfg.sparsities), "ascending levels below 1 with protocol=iterative "
                                                     "(one model passes them in order)")
        if not -1 <= cfg.rewind_epoch <= cfg.epochs:
            fail("rewind_epoch", cfg.rewind_epoch, f"-1 (no rewinding) or an epoch in 0..epochs={cfg.epochs}")

    @classmethod
    def retrains(cls, level) -> bool:
        return level != 0

    @classmethod
    def rounds(cls, cfg) -> dict[float, list[float]]:
        """Level > 0 -> the sparsity after each of its rounds."""
        levels = [p for p in cfg.sparsities if cls.retrains(p)]
        return dict(zip(levels, round_targets(levels, cfg.iterative_fraction)))

    @classmethod
    def extra_epochs(cls, cfg) -> int:
        return sum(map(len, cls.rounds(cfg).values())) * cfg.finetune_epochs

    @classmethod
    def shares_dense(cls, cfg) -> bool:
        return cfg.rewind_epoch < 0  # a rewind needs that epoch's weights, which a shared dense net lacks

    @classmethod
    def watch_training(cls, cfg, epoch, model, opt, store) -> None:
        if epoch == cfg.rewind_epoch:
            store["rewind"] = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}

    def model_epochs(self, level, progress) -> int:
        # one model passes the levels: its epochs are those of every earlier level's rounds too
        earlier = [p for p in self.cfg.sparsities if self.retrains(p) and p < level]
        return super().model_epochs(level, progress) + sum(len(self.store[prune.level_tag(p)]["history"]) for p in earlier)

    def prune_level(self, i, level, keep, progress):
        if not self.retrains(level):
            return super().prune_level(i, level, keep, progress)
        cfg, k = self.cfg, self.cfg.finetune_epochs
        lr = retrain_lr(cfg)
        m = copy.deepcopy(self.model)
        start = progress if "model" in progress else self.store.get("chain")  # resumed, or where the last level ended
        if start is not None:
            m.load_state_dict(start["model"])
            m.held = None if start["held"] is None else start["held"].to(m.point_weights().device)
        history = progress.setdefault("history", [])
        for j, s in enumerate(self.rounds(cfg)[level]):
            if len(history) >= (j + 1) * k:
                continue  # round done (resumed after it)
            if len(history) == j * k:  # round not started: prune (and rewind), then a fresh optimiser
                self.tighten(m, s, rewind=self.store["rewind"]["model"] if cfg.rewind_epoch >= 0 else None)
                progress.pop("model", None)
                progress.pop("optimizer", None)
            # one RNG stream per level, its rounds' epochs numbered on within it
            self.retrain(m, progress, (j + 1) * k, lr, seed_offset=100_000 * (i + 1))
        self.store["chain"] = {"model": {n: v.clone() for n, v in m.state_dict().items()}, "held": m.held}
        return m, {}
