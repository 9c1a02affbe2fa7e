import json
import re
import textwrap

import numpy as np
import pytest
import torch

from suite import export, prune, tracking
from suite.config import TrialConfig
from suite.methods import build
from suite.trial import run_trial


def docstring_loader():
    """The numpy loader exactly as the module docstring shows it."""
    block = re.search(r"numpy only\):\n\n(.*?)\n\n(?=\S)", export.__doc__, re.S).group(1)
    ns: dict = {}
    exec(textwrap.dedent(block), ns)
    return ns["load"]


def test_missing_packages_fail_with_the_extra_to_install(monkeypatch):
    real = export.importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None if name == "onnx" else real(name))
    with pytest.raises(export.ExportError, match=r'pip install "bayes-prune-bench\[export\]"'):
        export.require(["onnx"])
    export.require(["safetensors"])  # only what the asked formats need


@pytest.mark.parametrize("text,level", [("98", 0.98), ("0", 0.0), ("100", 1.0), ("nat", "nat")])
def test_level_is_a_percentage(text, level):
    assert export.parse_level(text) == level


@pytest.mark.parametrize("text", ["0.98", "101", "-5", "p98"])
def test_a_level_that_is_not_a_percentage_is_refused(text):
    with pytest.raises(export.ExportError, match="percent"):
        export.parse_level(text)


def test_safetensors_stores_sparse_layers_as_csr_and_the_loader_reads_both(tmp_path):
    from suite.evaluate.compact import CompactMLP
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(6, 5, generator=g) * (torch.rand(6, 5, generator=g) < 0.2)  # 80 % zeros: CSR
    w0[0, 0], w0[:, 2] = 1.0, 0.0    # live pixels 3, 4, 6, 7 (pixel 5, inside the window, is dead)
    w1 = torch.randn(10, 6, generator=g)                                          # dense: kept dense
    c = CompactMLP(torch.tensor([3, 4, 6, 7]), [(w0, torch.randn(6, generator=g)),
                                                (w1, torch.randn(10, generator=g))], [784, 50, 10])
    stem = tmp_path / "m"
    export.write_safetensors(c, {}, stem)
    from safetensors.torch import load_file
    keys = set(load_file(f"{stem}.safetensors"))
    assert {"weight_0.values", "weight_0.col", "weight_0.rowptr", "weight_1"} <= keys and "weight_0" not in keys
    nnz = int((w0 != 0).sum())  # 6 bytes per kept weight (float32 + int16 column) + 4 per row pointer
    assert 4 * nnz + 2 * nnz + 4 * 7 < 4 * w0.numel()
    x = torch.rand(20, 784, generator=g)
    h = torch.relu(x[:, [3, 4, 5, 6, 7]] @ w0.T + c.bias_0) @ w1.T + c.bias_1  # by hand
    got = docstring_loader()(str(stem))(x.numpy())
    assert np.abs(got - h.numpy()).max() <= 1e-5
    assert json.loads(stem.with_suffix(".json").read_text())["input_window"] == [3, 8]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sgd", "bbb"])
def test_export_of_a_logged_run_reproduces_the_pruned_model(method, mnist, tmp_path):
    import onnxruntime  # the export extra: pip install -e ".[dev,export]"
    cfg = TrialConfig(method=method, hidden=(32,), epochs=1, train_subset=1000, val_size=500, lr=1e-2,
                      sparsities=(0.0, 0.9), test_samples=2, compile=False)
    result = run_trial(cfg, arrays=mnist)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    run_id = tracking.log_result_locally(client, tracking.ensure_experiment(client, "export"), result, {"device": "cpu"})
    assert export.main(["--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(tmp_path / "x")]) == 0

    # the pruned model, rebuilt here from the in-memory result (not from the store)
    model = build(cfg).eval()
    model.load_state_dict(result.state_dict)
    allowed = prune.prunable(model, False)
    keep, _ = prune.keep_mask(prune.scores(model, cfg.resolved_pruner, cfg.seed), allowed, 0.9, "global", model)
    pruned = prune.pruned_copy(model, keep).eval()
    x = torch.tensor(mnist.x_test[:500].reshape(500, 784), dtype=torch.float32) / 255
    want = pruned(x).detach()

    stem = tmp_path / "x" / "model_p90"
    got_onnx = onnxruntime.InferenceSession(f"{stem}.onnx").run(None, {"x": x.numpy()})[0]
    assert np.abs(got_onnx - want.numpy()).max() <= 1e-5
    got_np = docstring_loader()(str(stem))(x.numpy())
    assert np.abs(got_np - want.numpy()).max() <= 1e-5
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["run_id"] == run_id and meta["widths"][-1] == 10 and len(meta["input_index"]) == meta["widths"][0]
    lo, hi = meta["input_window"]
    assert lo == meta["input_index"][0] and hi == meta["input_index"][-1] + 1 and meta["layer_shapes"][0][1] == hi - lo
    assert stem.with_suffix(".safetensors").stat().st_size < 4 * model.n_params  # smaller than the dense weights
