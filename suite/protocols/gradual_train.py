"""gradual_train: Zhu & Gupta 2017's gradual pruning as they ran it, during training from scratch
("To prune, or not to prune"). One model per trial at its one level s_f: after each training epoch
a - 1 + k, k = 1..n (gradual_train_epochs [a, b], n = b - a + 1) the mask is recomputed from the
method's score on the current weights at sparsity
    s_k = s_f (1 - (1 - k / n)^3),
so the net reaches s_f at the end of epoch b and trains on at s_f under the training lr schedule
(Zhu & Gupta prune while the lr is high and let the net recover at the final mask). A pruned weight
stays pruned (held: exactly 0, zero gradient; the masks only shrink) and its optimiser moments are
zeroed when it is pruned, so they stay 0.

One mask update per epoch: the hook is watch_training, called between epochs right before the trial
state is saved, so a resumed trial restores the mask from the state and prunes exactly when the
uninterrupted one did, with no step hook to register or duplicate. LeNet's 50k images at batch 100
make an epoch 500 steps, inside the 100-1000 steps between updates Zhu & Gupta found alike.

The trained model is the pruned model (model.pt): a level is a copy at its own zeros, no retraining,
model_epochs = epochs. A level 0 has no such model, so the levels are exactly one s_f in (0, 1)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import prune
from . import Params, register
from .base import Protocol, forget_pruned, tighten
from .gradual import cubic_levels

KEY = "gradual_train"  # the trial state's entry: {"epoch": last update applied, "held": bool [P] mask}


@dataclass(frozen=True)
class GradualTrainParams(Params):
    gradual_train_epochs: tuple[int, ...] = ()
    """[a, b]: training epochs of Zhu & Gupta's cubic rise to s_f, a mask update after each of a..b; no default."""


@register
class GradualTrain(Protocol):
    name, order = "gradual_train", 35.0
    Params = GradualTrainParams
    label_suffix, order_offset, baseline_color = " + gradual in training", 0.65, "#6b6ecf"

    @classmethod
    def check(cls, cfg, fail) -> None:
        if len(cfg.sparsities) != 1 or not 0 < cfg.sparsities[0] < 1:
            fail("sparsities", list(cfg.sparsities), "exactly one level in (0, 1) with protocol=gradual_train "
                                                     "(one model pruned during training per target; no dense level 0)")
        a_b = cfg.gradual_train_epochs
        if len(a_b) != 2 or not 1 <= a_b[0] <= a_b[1] <= cfg.epochs:
            fail("gradual_train_epochs", list(a_b), f"[a, b] with 1 <= a <= b <= epochs={cfg.epochs} "
                                                    "with protocol=gradual_train")

    @classmethod
    def schedule(cls, cfg) -> dict[int, float]:
        """Training epoch -> the sparsity of the mask update after it."""
        a, b = cfg.gradual_train_epochs
        return {a - 1 + k: s for k, s in enumerate(cubic_levels(cfg.sparsities[0], b - a + 1), 1)}

    @classmethod
    def watch_training(cls, cfg, epoch, model, opt, store) -> None:
        saved = store.get(KEY)
        if saved is not None and model.held is None:  # resumed: the state's weights are 0 there already
            model.held = saved["held"].to(model.point_weights().device)
        s = cls.schedule(cfg).get(epoch)
        if s is None or (saved is not None and saved["epoch"] >= epoch):  # not an update, or applied before the save
            return
        tighten(model, cfg, s)
        forget_pruned(opt, model.held)
        store[KEY] = {"epoch": epoch, "held": model.held.cpu().clone()}

    def mask(self, level):
        """The held mask, rebuilt from the trained weights alone (model.pt is all a re-evaluation has):
        the held entries are exactly the zeros of the point weights (prune_), so they score -inf and
        are the round(s_f n) lowest, the count tighten pruned (structure units: the units with nothing
        left, all of which go); the threshold is that of the score (units: of the units removed)."""
        zeros = self.model.point_weights().detach().cpu() == 0
        keep, _ = prune.keep_mask(self.score.masked_fill(zeros, float("-inf")), self.allowed, level,
                                  self.cfg.prune_scope, self.model, self.cfg.prune_structure)
        pruned = self.score[self.allowed & ~keep]
        if self.cfg.prune_structure == "units":  # a unit's score sits on every weight of its column
            units = self.model.reduce_units(self.score, "max")
            pruned = units[self.model.reduce_units(keep.float(), "max") == 0]
        return keep, float(pruned.max()) if self.cfg.prune_scope == "global" and len(pruned) else math.nan

