"""The one training loop. Methods differ only in the model's objective (NLL, or NLL + weighted KL)."""
from __future__ import annotations

import time
from typing import Callable

import torch

from .config import TrialConfig
from .data import Splits
from .models import MLP

EpochCallback = Callable[[dict], None]


def kl_weights(n_batches: int, scheme: str) -> list[float]:
    """KL weight pi_i of minibatch i = 1..M; both schemes sum to 1 over an epoch.
    blundell: pi_i = 2^(M-i) / (2^M - 1) (Blundell et al. 2015, eq. 9), written as
    2^-i / (1 - 2^-M) so it cannot overflow for large M; uniform: 1/M."""
    if scheme == "uniform":
        return [1.0 / n_batches] * n_batches
    norm = 1.0 - 2.0 ** -n_batches
    return [2.0 ** -i / norm for i in range(1, n_batches + 1)]


def make_optimizer(cfg: TrialConfig, model: MLP) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr)
    # fused Adam: one kernel over the (1 or 2) flat parameter tensors instead of ~10 small ops each.
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch reseeds the RNGs from (seed, epoch): a trial resumed at epoch k draws exactly the
    data order, dropout masks and weight samples it would have drawn without the interruption."""
    return seed * 1_000_003 + epoch


@torch.no_grad()
def evaluate_acc(model: MLP, x: torch.Tensor, y: torch.Tensor, chunk: int = 10000) -> float:
    model.eval()
    correct = sum(int((model(xc).argmax(-1) == yc).sum()) for xc, yc in zip(x.split(chunk), y.split(chunk)))
    return correct / len(y)


def train(model: MLP, opt: torch.optim.Optimizer, data: Splits, cfg: TrialConfig,
          history: list[dict], on_epoch: EpochCallback | None = None) -> list[dict]:
    """Train from epoch len(history)+1 to cfg.epochs, appending one log dict per epoch:
    epoch, train_loss, train_nll, train_kl (bbb only), val_acc, step_time_ms (mean training step,
    data order included), epoch_time_s (steps + validation)."""
    n = len(data.y_train)
    weights = kl_weights((n + cfg.batch_size - 1) // cfg.batch_size, cfg.kl_weighting)
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)))
        order = order.to(data.x_train.device)
        model.train()
        # running sums stay on the device: no host sync per step
        sums = torch.zeros(3, device=data.x_train.device)
        for i, idx in enumerate(order.split(cfg.batch_size)):
            loss, nll, kl = model.objective(data.x_train[idx], data.y_train[idx], weights[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), nll.detach(), kl.detach() if kl is not None else loss.new_zeros(())])
        loss_m, nll_m, kl_m = (sums / len(weights)).tolist()  # .tolist() syncs the device: steps are done
        step_ms = 1000 * (time.perf_counter() - t0) / len(weights)
        log = {"epoch": epoch, "train_loss": loss_m, "train_nll": nll_m,
               "val_acc": evaluate_acc(model, data.x_val, data.y_val), "step_time_ms": step_ms}
        if cfg.method == "bbb":
            log["train_kl"] = kl_m
        log["epoch_time_s"] = time.perf_counter() - t0
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)
    return history


def fit_epochs(history: list[dict], target: float) -> dict[str, int]:
    """epochs_to_fit: first epoch with val_acc >= target (absent if never);
    epochs_to_99pct_best: first epoch with val_acc >= 0.99 x the best val_acc of the trial."""
    accs = [h["val_acc"] for h in history]
    out = {"epochs_to_99pct_best": next(h["epoch"] for h in history if h["val_acc"] >= 0.99 * max(accs))}
    fit = next((h["epoch"] for h in history if h["val_acc"] >= target), None)
    if fit is not None:
        out["epochs_to_fit"] = fit
    return out
