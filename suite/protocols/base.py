"""The protocol interface and registry: which levels a trial evaluates and what is done to the
trained model at each before it is evaluated.

A protocol is a Protocol subclass registered with @register in its own file (ARCHITECTURE.md,
"How to add a protocol"), with its settings in its own Params dataclass, as a method has. `protocol`
stays a plain string field of TrialConfig, so grid keys do not depend on this code; config
validation asks the registry. One instance runs one trial's sweep.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from .. import prune, train
from ..params import Params

if TYPE_CHECKING:
    from ..config import TrialConfig
    from ..data import Splits
    from ..methods import Method

# on_epoch(log, state) of run_trial: state() returns what a checkpoint needs to resume the trial
# exactly (live references: serialise or copy them before the next epoch)
OnEpoch = Callable[[dict, Callable[[], dict]], None]


class Protocol:
    """Base of every protocol: the levels are cfg.sparsities, each pruned by the trained model's
    score into a fresh copy and evaluated as it is (the one-shot protocol)."""

    name: ClassVar[str]                        # registry name, the `protocol` grid value
    order: ClassVar[float] = 100.0             # position in listings (errors, --help)
    Params: ClassVar[type[Params]] = Params    # its own settings (flat keys, read as cfg.<setting>)
    label_suffix: ClassVar[str] = ""           # appended to the method's label (run tag `label`)
    order_offset: ClassVar[float] = 0.0        # added to the method's label_order (run tag `label_order`)
    baseline_color: ClassVar[str | None] = None  # colour of the baseline method under this protocol (None: its own)
    is_baseline: ClassVar[bool] = False        # the baseline method's runs of this protocol are the report's baseline

    def __init__(self, cfg: TrialConfig, model: Method, data: Splits, store: dict[str, dict],
                 on_epoch: OnEpoch | None = None, state: Callable[[], dict] | None = None):
        """model: the trained model (never changed); store: the trial state's "finetune" entry,
        level tag -> resumable progress or finished results of the levels that retrain, plus what a
        protocol keeps across levels (iterative: "chain", "rewind")."""
        self.cfg, self.model, self.data, self.store = cfg, model, data, store
        self.on_epoch, self.state = on_epoch, state
        self.allowed = prune.prunable(model, cfg.prune_biases)
        self.score = prune.scores(model, cfg.resolved_pruner, cfg.seed, cfg.prune_structure)

    # -- configuration (no model needed)
    @classmethod
    def check(cls, cfg: TrialConfig, fail) -> None:
        """Checks that need more than the protocol's own settings (Params.check has those): the
        method, the levels, the training epochs; fail(field, value, allowed) raises."""

    @classmethod
    def levels(cls, cfg: TrialConfig) -> list[float | str]:
        """The levels evaluated, in order (a metric suffix each: prune.level_tag)."""
        return list(cfg.sparsities)

    @classmethod
    def retrains(cls, level: float | str) -> bool:
        """Whether the level trains: then its progress is resumable, and its results and its model's
        weights (prune.held_state, the artifact levels/pNN.npz) are kept in the trial state."""
        return False

    @classmethod
    def extra_epochs(cls, cfg: TrialConfig) -> int:
        """Epochs trained after training proper (for progress and ETA: TrialConfig.total_epochs)."""
        return 0

    @classmethod
    def shares_dense(cls, cfg: TrialConfig) -> bool:
        """Whether the trial's training proper is plain training, untouched by the protocol, so it may
        start from the dense net another protocol of the same recipe trained (TrialConfig.dense_key).
        Default: yes unless the protocol watches training (watch_training); one that does says when
        its watching changes nothing a shared net lacks."""
        return getattr(cls.watch_training, "__func__", None) is Protocol.watch_training.__func__

    @classmethod
    def watch_training(cls, cfg: TrialConfig, epoch: int, model: Method, opt: torch.optim.Optimizer,
                       store: dict[str, dict]) -> None:
        """Called with the model and its optimiser after every training epoch, and before training
        with the epochs already trained (0, or those a resumed trial starts after); a protocol that
        needs an epoch's weights later keeps them in `store`, which the trial state carries, and a
        protocol that prunes during training restores its mask from there on resume."""

    # -- one trial's sweep
    def mask(self, level: float | str) -> tuple[Tensor, float]:
        """Bool [P] keep mask of a level and its score threshold (for the score histograms' plots)."""
        return prune.keep_mask(self.score, self.allowed, level, self.cfg.prune_scope, self.model, self.cfg.prune_structure)

    def prune_level(self, i: int, level: float | str, keep: Tensor, progress: dict) -> tuple[Method, dict[str, float]]:
        """The model evaluated at level number i (never self.model itself) and metrics of the
        protocol's own; progress is the level's entry in the trial state when it retrains."""
        return prune.pruned_copy(self.model, keep), {}

    def model_epochs(self, level: float | str, progress: dict) -> int:
        """The epochs behind the model evaluated at `level`, counted from what was trained: training
        proper plus the epochs of the level's own retraining phase (its `progress` history). A
        protocol whose levels build on each other's models adds theirs (iterative)."""
        return self.cfg.epochs + len(progress.get("history", ()))

    def tighten(self, m: Method, sparsity: float, rewind: dict | None = None) -> None:
        """tighten(m, self.cfg, sparsity, rewind)."""
        tighten(m, self.cfg, sparsity, rewind)

    def retrain(self, m: Method, progress: dict, epochs: int, lr: float, seed_offset: int,
                on_step: Callable[[torch.optim.Optimizer, int], None] | None = None) -> list[dict]:
        """Train m (holding its mask if m.held) up to epoch `epochs` of its phase at a constant lr
        with a fresh optimiser in the one training loop, resumably: `progress` carries the phase's
        history, weights, mask and optimiser state. seed_offset gives the phase its own RNG stream
        (train.epoch_seed). on_step(optimiser, t) runs after every step t (1-based within the
        phase). Returns the phase's history; its epochs are reported to on_epoch numbered on from
        training's, so progress and ETA stay monotone up to TrialConfig.total_epochs."""
        phase = train.Phase(epochs, lr, seed_offset=seed_offset)
        opt = train.make_optimizer(self.cfg, m, lr)
        progress.setdefault("history", [])
        if "model" in progress:
            m.load_state_dict(progress["model"])
            opt.load_state_dict(progress["optimizer"])
            if progress.get("held") is not None:
                m.held = progress["held"].to(m.point_weights().device)
        if on_step is not None:
            n_batches = -(-len(self.data.y_train) // self.cfg.batch_size)
            steps = itertools.count(len(progress["history"]) * n_batches + 1)
            phase = dataclasses.replace(phase, on_step=lambda: on_step(opt, next(steps)))

        def after_epoch(log: dict) -> None:
            progress.update(model=m.state_dict(), optimizer=opt.state_dict(), held=m.held)
            if self.on_epoch is not None:
                done = sum(len(p.get("history", ())) for p in self.store.values())
                self.on_epoch({**log, "epoch": self.cfg.epochs + done}, self.state)
        with torch.enable_grad():
            return train.train(m, opt, self.data, self.cfg, progress["history"], after_epoch, phase)


def tighten(m: Method, cfg: TrialConfig, sparsity: float, rewind: dict | None = None) -> None:
    """Prune m further, to `sparsity`, by the score of its current weights, and hold that mask:
    what is pruned already stays pruned (its score counts as -inf; structure units: so does a unit
    with nothing left, and the others score over their held weights), so the masks only shrink.
    rewind: a state dict whose weights the kept entries are reset to first (the pruned ones stay 0)."""
    score = prune.scores(m, cfg.resolved_pruner, cfg.seed, cfg.prune_structure)
    if m.held is not None:
        score[~m.held.cpu()] = float("-inf")
    keep, _ = prune.keep_mask(score, prune.prunable(m, cfg.prune_biases), sparsity, cfg.prune_scope, m, cfg.prune_structure)
    if rewind is not None:
        m.load_state_dict(rewind)
    m.hold_(keep)


@torch.no_grad()
def forget_pruned(opt: torch.optim.Optimizer, held: Tensor) -> None:
    """Zero the optimiser's per-entry state (Adam's moments, SGD's momentum) of the entries `held`
    prunes: a weight pruned mid-training would otherwise keep moving on its old momentum; with its
    gradient zeroed from then on (Method.hold_) its state stays 0 and the weight exactly 0."""
    for state in opt.state.values():
        for v in state.values():
            if torch.is_tensor(v) and v.shape == held.shape:
                v.masked_fill_(~held, 0.0)
