"""The one training loop, for training and for fine-tuning with a held pruning mask alike.
Methods differ only in the model's objective (NLL, or NLL + weighted KL) and their hooks."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import prune
from .data import Splits
from .methods import Method

if TYPE_CHECKING:  # config imports the protocols, which train through this module
    from .config import TrialConfig

EpochCallback = Callable[[dict], None]


@dataclass(frozen=True)
class Phase:
    """What one call of train() runs: training proper, or one level's fine-tuning."""

    epochs: int               # last epoch of this phase (1-based, within the phase)
    lr: float                 # base learning rate
    decay_start: int = 0      # 0: constant lr; k: linear decay from epoch k towards 0 at `epochs`
    seed_offset: int = 0      # separates the RNG streams of phases (epoch_seed(seed, offset + epoch))
    on_step: Callable[[], None] | None = None  # called after every step (the gradual protocol's mask updates)

    def lr_at(self, epoch: int) -> float:
        """Linear decay: lr x (E - e + 1) / (E - k + 1) from epoch k on (Molchanov et al. 2017 decay
        their lr linearly to 0 over the second half of training)."""
        if not self.decay_start or epoch <= self.decay_start:
            return self.lr
        return self.lr * (self.epochs - epoch + 1) / (self.epochs - self.decay_start + 1)


def training_phase(cfg: TrialConfig) -> Phase:
    return Phase(cfg.epochs, cfg.lr, cfg.lr_decay_start)


def make_optimizer(cfg: TrialConfig, model: Method, lr: float | None = None) -> torch.optim.Optimizer:
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # fused Adam: one kernel over the (1 or 2) flat parameter tensors instead of ~10 small ops each.
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=True)


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch reseeds the RNGs from (seed, epoch): a trial resumed at epoch k draws exactly the
    data order, dropout masks and weight samples it would have drawn without the interruption."""
    return seed * 1_000_003 + epoch


@torch.no_grad()
def evaluate_acc(model: Method, x: torch.Tensor, y: torch.Tensor, chunk: int = 10000) -> float:
    model.eval()
    correct = sum(int((model(xc).argmax(-1) == yc).sum()) for xc, yc in zip(x.split(chunk), y.split(chunk)))
    return correct / len(y)


def train(model: Method, opt: torch.optim.Optimizer, data: Splits, cfg: TrialConfig, history: list[dict],
          on_epoch: EpochCallback | None = None, phase: Phase | None = None) -> list[dict]:
    """Train from epoch len(history)+1 to phase.epochs, appending one log dict per epoch:
    epoch, train_loss, train_nll, train_kl (methods with a KL), val_acc, lr, step_time_ms (mean
    training step, data order included), epoch_time_s (steps + validation).
    With a held mask (model.held, the finetune protocol) the pruned entries' gradients are zeroed
    before every step, so they and their Adam moments stay exactly 0 (in every [P] parameter; a
    method's per-group parameters, e.g. Bayesian Compression's scales, are not masked)."""
    phase = phase or training_phase(cfg)
    n = len(data.y_train)
    n_batches = (n + cfg.batch_size - 1) // cfg.batch_size
    for epoch in range(len(history) + 1, phase.epochs + 1):
        t0 = time.perf_counter()
        seed = epoch_seed(cfg.seed, phase.seed_offset + epoch)
        torch.manual_seed(seed)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(data.x_train.device)
        lr = phase.lr_at(epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        weights = model.kl_weights(n_batches, epoch)
        model.train()
        # running sums stay on the device: no host sync per step
        sums = torch.zeros(3, device=data.x_train.device)
        for i, idx in enumerate(order.split(cfg.batch_size)):
            loss, nll, kl = model.objective(data.x_train[idx], data.y_train[idx], weights[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if model.held is not None:
                for p in model.parameters():
                    if p.shape == model.held.shape:  # per-weight; a per-group or per-layer one trains on
                        p.grad.masked_fill_(~model.held, 0.0)
            opt.step()
            model.after_step()
            if phase.on_step is not None:
                phase.on_step()
            sums += torch.stack([loss.detach(), nll.detach(), kl.detach() if kl is not None else loss.new_zeros(())])
        loss_m, nll_m, kl_m = (sums / n_batches).tolist()  # .tolist() syncs the device: steps are done
        step_ms = 1000 * (time.perf_counter() - t0) / n_batches
        log = {"epoch": epoch, "train_loss": loss_m, "train_nll": nll_m,
               "val_acc": evaluate_acc(model, data.x_val, data.y_val), "step_time_ms": step_ms,
               **pruned_val_acc(model, cfg, data)}
        if model.has_kl:
            log["train_kl"] = kl_m
        if phase.decay_start:
            log["lr"] = lr
        log["epoch_time_s"] = time.perf_counter() - t0
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)
    return history


@torch.no_grad()
def pruned_val_acc(model: Method, cfg: TrialConfig, data: Splits) -> dict[str, float]:
    """val_acc_pNN for every level of cfg.val_sparsities: a pruned copy's validation accuracy (the
    metric a recipe search selects on; pruning never sees the test split). No global RNG is used, so
    training draws the same numbers with or without it."""
    if not cfg.val_sparsities:
        return {}
    allowed = prune.prunable(model, cfg.prune_biases)
    score = prune.scores(model, cfg.resolved_pruner, cfg.seed, cfg.prune_structure)
    out = {}
    for p in cfg.val_sparsities:
        keep, _ = prune.keep_mask(score, allowed, p, cfg.prune_scope, model, cfg.prune_structure)
        out[f"val_acc_{prune.level_tag(p)}"] = evaluate_acc(prune.pruned_copy(model, keep), data.x_val, data.y_val)
    out["val_acc_mean"] = sum(out.values()) / len(out)  # the area under validation accuracy vs the listed levels, per level
    return out


def fit_epochs(history: list[dict], target: float) -> dict[str, int]:
    """epochs_to_fit: first epoch with val_acc >= target (absent if never);
    epochs_to_99pct_best: first epoch with val_acc >= 0.99 x the best val_acc of the trial."""
    accs = [h["val_acc"] for h in history]
    out = {"epochs_to_99pct_best": next(h["epoch"] for h in history if h["val_acc"] >= 0.99 * max(accs))}
    fit = next((h["epoch"] for h in history if h["val_acc"] >= target), None)
    if fit is not None:
        out["epochs_to_fit"] = fit
    return out
