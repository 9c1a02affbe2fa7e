"""The models committed beside a results folder (results/<grid>/models/) give the accuracies its runs
file records, computed here with numpy alone from the documented format (docs/mlflow.md, levels/pNN.npz:
the kept mask bit-packed over the flat parameter vector, then the kept values in index order; the
vector is, per layer, its weight [out, in] row-major then its bias): a second implementation of the
forward pass, sharing nothing with the suite's but the data reader."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(ROOT.glob("results/*/models/*.npz"))


def logits(z, hidden: list[int], x: np.ndarray) -> np.ndarray:
    sizes = [784, *hidden, 10]
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    theta = np.zeros(n, np.float32)
    kept = np.unpackbits(z["held"], count=n).astype(bool)
    theta[kept] = z["theta"]
    h, pos = x, 0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = theta[pos:pos + a * b].reshape(b, a)
        bias = theta[pos + a * b:pos + a * b + b]
        pos += a * b + b
        h = h @ w.T + bias
        if i < len(sizes) - 2:
            h = np.maximum(h, 0)
    return h


def test_there_are_committed_models():
    assert MODELS, "no results/*/models/*.npz"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_a_committed_model_gives_the_recorded_accuracy_and_sparsity(path, mnist, fmnist):
    meta = json.loads(path.with_suffix(".json").read_text())
    cfg = meta["config"]
    data = {"mnist": mnist, "fmnist": fmnist}[cfg["dataset"]]
    x = data.x_test.reshape(-1, 784).astype(np.float32) / 255
    with np.load(path) as z:
        acc = float((logits(z, cfg["hidden"], x).argmax(1) == data.y_test).mean())
        n_weights = 784 * cfg["hidden"][0] + sum(a * b for a, b in zip(cfg["hidden"], [*cfg["hidden"][1:], 10]))
        kept_weights = int(np.unpackbits(z["held"]).sum()) - sum(cfg["hidden"]) - 10  # biases are never pruned
    runs = pd.read_parquet(path.parent.parent / "runs.parquet")
    tag = next(m[1] for k in runs[runs.run_id == meta["run_id"]].key if (m := re.fullmatch(r"test_acc_(p\d+|nat)", k)))
    recorded = runs[(runs.run_id == meta["run_id"]) & (runs.kind == "metric")].sort_values(["step", "timestamp"])
    last = recorded.groupby("key").value.last()
    assert acc == pytest.approx(last[f"test_acc_{tag}"], abs=1e-4)  # float32 sums in another order: 1 image at most
    assert 1 - kept_weights / n_weights == pytest.approx(last[f"sparsity_{tag}"], abs=1e-6)
