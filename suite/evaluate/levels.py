"""A trial's levels evaluated one after another, wherever each level's model comes from: the protocol
at the end of training (trial.evaluate_pruned) or a run's stored weights (suite.stored). Both go
through LevelEvaluator.evaluate, so a level's model gives the same metrics either way: the same
probes, the same curve levels, and the same seed, level_seed(seed, i), set right before the level's
evaluation (i its position among the protocol's levels).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .. import prune
from ..methods import Method
from .level import curve_levels, evaluate_level, level_seed, probes

if TYPE_CHECKING:  # config imports the protocols, which import this package's metrics
    from ..config import TrialConfig
    from ..data import Splits


@dataclass(frozen=True)
class LevelDone:
    """One level evaluated, for progress lines: its tag, its number i of n (0-based), its metrics and
    the seconds since its work began (pruning and retraining included, when the caller says so)."""

    tag: str
    i: int
    n: int
    metrics: dict[str, float]
    seconds: float


OnLevel = Callable[[LevelDone], None]


def validation(cfg: TrialConfig, data: Splits) -> tuple[Tensor, Tensor] | None:
    """The trial's validation split (x_val, y_val), None when val_size = 0 (it would be the test split,
    which must choose nothing: a point-estimate method then gets no precision, evaluate.bits)."""
    return (data.x_val, data.y_val) if cfg.val_size else None


class LevelEvaluator:
    """Evaluates the levels of one trial on its test split x, y ([N, 784], [N]) and out-of-distribution
    inputs x_ood ([M, 784] or None), all on the models' device; the probes are built once here.
    val: the validation split (validation()) a point-estimate method's bit precision is chosen on."""

    def __init__(self, cfg: TrialConfig, levels: Sequence[float | str], x: Tensor, y: Tensor,
                 x_ood: Tensor | None, on_level: OnLevel | None = None, val: tuple[Tensor, Tensor] | None = None):
        self.cfg, self.levels, self.x, self.y, self.on_level, self.val = cfg, list(levels), x, y, on_level, val
        self.probe, self.curves = probes(x, y, x_ood), curve_levels(self.levels)

    @torch.no_grad()
    def evaluate(self, i: int, m: Method, started: float | None = None) -> tuple[dict[str, float], dict[str, str]]:
        """Level number i's model m (already at its level): its metrics and info, named as the trial logs
        them (evaluate_level). started: time.perf_counter() when the level's work began (default now)."""
        p = self.levels[i]
        started = time.perf_counter() if started is None else started
        torch.manual_seed(level_seed(self.cfg.seed, i))
        out, info = evaluate_level(m, self.cfg, self.x, self.y, prune.level_tag(p), self.probe, p in self.curves,
                                   self.val)
        if self.on_level is not None:
            self.on_level(LevelDone(prune.level_tag(p), i, len(self.levels), out, time.perf_counter() - started))
        return out, info


def progress_line(d: LevelDone) -> str:
    """The progress line of a level: tag, i/n, test accuracy, seconds."""
    return f"level {d.tag:>4} {d.i + 1}/{d.n}  acc {d.metrics[f'test_acc_{d.tag}']:.4f}  {d.seconds:.1f}s"
