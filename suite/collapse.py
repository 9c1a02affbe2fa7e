"""Collapse: a trial whose network predicts no better than chance, said out loud.

A method can train to chance without an error (Sparse VD at lr 1e-4 without KL warm-up pushes every
weight to its prior; BBB with a too-strong prior does the same). Its pruning curve is then flat at
1 / classes and reads as "robust to pruning". A trial is flagged when its final validation accuracy
is at most CHANCE_FACTOR x 1 / classes (0.15 for the 10-class datasets): the summary and the sweep's
progress line warn, and the MLflow run carries the tag `collapsed=true` (the report marks its cells).
"""
from __future__ import annotations

CHANCE_FACTOR = 1.5
TAG = "collapsed"
CLASSES = 10  # MNIST and Fashion-MNIST: every network here is 784-...-10


def collapsed(final_val_acc: float, classes: int = CLASSES) -> bool:
    """True when the final validation accuracy is within CHANCE_FACTOR of chance (1 / classes)."""
    return final_val_acc <= CHANCE_FACTOR / classes


def warning(final_val_acc: float, classes: int = CLASSES) -> str:
    """The one warning line of a collapsed trial."""
    return (f"WARNING: collapsed: final val_acc {final_val_acc:.4f} <= {CHANCE_FACTOR:g} x chance "
            f"({1 / classes:.2f}); the network predicts at chance (check lr and, with a KL, kl_warmup)")
