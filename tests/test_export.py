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
    assert export.main(["--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(tmp_path / "x"),
                        "--format", "safetensors", "--format", "onnx", "--format", "quantised"]) == 0

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
    assert meta["run_id"] == run_id and meta["grid_key"] == cfg.grid_key() and meta["seed"] == cfg.seed
    assert meta["widths"][-1] == 10 and len(meta["input_index"]) == meta["widths"][0]
    lo, hi = meta["input_window"]
    assert lo == meta["input_index"][0] and hi == meta["input_index"][-1] + 1 and meta["layer_shapes"][0][1] == hi - lo
    assert stem.with_suffix(".safetensors").stat().st_size < 4 * model.n_params  # smaller than the dense weights
    # the quantised file: the precision the trial's evaluation chose (validation split for SGD), recomputed
    assert meta["quantised"]["logged"].startswith("equal to the run's logged")
    assert meta["quantised"]["rule"] == ("validation" if method == "sgd" else "posterior variance")
    stored_bits = int(result.metrics["stored_bytes_p90"] * 8)
    assert (tmp_path / "x" / "model_p90.q").stat().st_size == 8 + 4 * 2 + -(-stored_bits // 8)


def logged_bbb(tmp_path, tamper: dict[str, float]) -> tuple[str, str, torch.nn.Module]:
    """(uri, run id, the pruned model): an untrained BBB run (posterior variances: no data needed) logged
    FINISHED at p00 and p90 with its model.pt, config.json and the p90 compression metrics and tags as
    the evaluation computes them (bits.measure), `tamper` overriding some of them."""
    from suite import methods, stored
    from suite.evaluate import bits, compact
    cfg = TrialConfig(method="bbb", hidden=(16,), sparsities=(0.0, 0.9), compile=False)
    art = tmp_path / "art"
    art.mkdir()
    (art / "config.json").write_text(json.dumps(cfg.to_dict()))
    torch.manual_seed(0)
    torch.save(methods.build(cfg).state_dict(), art / "model.pt")
    run = stored.read(art)
    m = stored.model_at(stored.protocol(run), run, 0.9)
    x, y = torch.rand(50, 784), torch.randint(0, 10, (50,))
    metrics, info = bits.measure(m, compact.compact(m), x, y, None, "p90")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    run_id = tracking.start_run(client, tracking.ensure_experiment(client, "e"), cfg, {})
    tracking.finish_run(client, run_id, {"test_acc_p00": 0.1, "test_acc_p90": 0.1, **metrics, **tamper}, info, art)
    return uri, run_id, m


def test_the_quantised_file_is_the_stored_size_and_reads_back_as_the_onnx_net(tmp_path, capsys):
    """--format quantised: model_p90.q is 8 + 4 x 2 bytes of file header plus the run's logged
    stored_bytes_p90 rounded up to a byte; its weights, read by the numpy reader, are multiples of 2^-F
    within half a step of the compacted float weights; its numpy forward and onnxruntime's on the
    dequantised ONNX agree; the JSON records the bytes and 32 x parameters / file bits."""
    import onnxruntime

    from suite.evaluate import compact, packed
    uri, run_id, m = logged_bbb(tmp_path, {})
    runs = tracking.connect(uri).get_run(run_id).data.metrics
    out = tmp_path / "x"
    assert export.main(["--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(out),
                        "--format", "quantised"]) == 0
    assert "equal to the run's logged" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["model_p90.json", "model_p90.q", "model_p90.q.onnx"]
    raw = (out / "model_p90.q").read_bytes()
    assert len(raw) == 16 + -(-int(runs["stored_bytes_p90"] * 8) // 8)
    meta = json.loads((out / "model_p90.json").read_text())["quantised"]
    assert meta["bytes"] == len(raw) and meta["compression"] == 32 * m.n_params / (8 * len(raw))
    mask, layers = packed.decode(raw)
    c = compact.compact(m)
    floats = [c.weight_0[:, c.index - c.lo], c.weight_1]
    assert mask.nonzero()[0].tolist() == c.index.tolist()
    for (w, b), f, wf, bf in zip(layers, meta["fraction_bits"], floats, [c.bias_0, c.bias_1]):
        assert np.array_equal(np.round(w * 2.0 ** f), w * 2.0 ** f)  # on the grid of 2^-F
        assert np.abs(w - wf.numpy()).max() <= 2.0 ** -(f + 1) and np.array_equal(b, bf.numpy())
    x = torch.rand(200, 784, generator=torch.Generator().manual_seed(1)).numpy()
    h = np.maximum(x[:, mask] @ layers[0][0].T + layers[0][1], 0) @ layers[1][0].T + layers[1][1]
    got = onnxruntime.InferenceSession(str(out / "model_p90.q.onnx")).run(None, {"x": x})[0]
    assert np.abs(got - h).max() <= 1e-5


def test_a_stored_precision_other_than_the_logged_one_is_refused(tmp_path, capsys):
    uri, run_id, _ = logged_bbb(tmp_path, {"stored_bytes_p90": 1.0})
    assert export.main(["--run-id", run_id, "--level", "90", "--tracking-uri", uri, "--out", str(tmp_path / "x"),
                        "--format", "quantised"]) == 2
    err = capsys.readouterr().err
    assert "stored_bytes_p90 logged 1, now" in err and "suite.evaluate --run-id ID --force" in err
    assert not (tmp_path / "x" / "model_p90.q").exists()
