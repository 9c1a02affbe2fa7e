"""The quantised model files committed beside a results folder are the networks its runs file describes.

results/<grid>/models/<name>.q is `python -m suite.export --format quantised` of one run at one level (its
JSON beside it names the run by its grid key). Read by the numpy-only decoder (suite/evaluate/packed.py, format in
docs/bits.md) and run with numpy, each file must give the test accuracy the run logged for its quantised
net (quant_acc_<level>), hold exactly the bits it logged (stored_bytes_<level>; the file adds its header),
the compacted widths it logged and no more nonzero weights than its pruned net had (a weight rounded to 0
at its precision only lowers the count). So the bytes the report claims are checked on the files.
"""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite.evaluate.packed import decode

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(ROOT.glob("results/*/models/*.q"))


def logged(folder: Path, grid_key: str) -> pd.Series:
    """The final metrics of the run of this grid key (run ids change when a runs file is imported)."""
    runs = pd.read_parquet(folder / "runs.parquet")
    [run_id] = runs.loc[(runs.kind == "tag") & (runs.key == "grid_key") & (runs.text == grid_key), "run_id"]
    metrics = runs[(runs.run_id == run_id) & (runs.kind == "metric")].sort_values(["step", "timestamp"])
    return metrics.groupby("key").value.last()


def test_the_lenet_papers_bayesian_compression_models_are_committed():
    labels = {json.loads(p.with_suffix(".json").read_text())["label"] for p in MODELS if p.parts[-3] == "lenet-papers"}
    assert {"BC-GNJ", "BC-GHS"} <= labels


@pytest.mark.parametrize("path", MODELS, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_a_committed_quantised_model_is_what_its_run_logged(path, mnist, fmnist):
    meta = json.loads(path.with_suffix(".json").read_text())
    level, m = meta["level"], logged(path.parents[1], meta["grid_key"])
    raw = path.read_bytes()
    mask, layers = decode(raw)
    assert len(raw) == 8 + 4 * len(layers) + math.ceil(m[f"stored_bytes_{level}"] - 1e-9)
    widths = [int(mask.sum()), *(w.shape[0] for w, _ in layers)]
    assert widths == [*(int(m[f"compact_width_l{i}_{level}"]) for i in range(len(layers))), 10]
    assert 0 < sum(int(np.count_nonzero(w)) for w, _ in layers) <= m[f"params_nonzero_{level}"]
    data = {"mnist": mnist, "fmnist": fmnist}[meta["dataset"]]
    h = data.x_test.reshape(-1, 784).astype(np.float32)[:, mask] / 255
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        h = np.maximum(h, 0) if i < len(layers) - 1 else h
    acc = float((h.argmax(1) == data.y_test).mean())
    assert acc == pytest.approx(m[f"quant_acc_{level}"], abs=1e-4)  # float32 sums in another order: 1 image at most
