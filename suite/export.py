"""Export a finished run's pruned model as the small dense network it is (suite.evaluate.compact).

    python -m suite.export --run-id ID --level 98 [--tracking-uri URI] [--out DIR] [--format onnx|safetensors|quantised]
                           [--overwrite]

Loads the run's model.pt (the trained, unpruned state dict) and config.json artifacts, rebuilds the
model at the level exactly as the trial's evaluation did (suite.stored: the protocol's mask from the
run's pruner, scope and seed; a level its protocol retrained from its levels/pNN.npz artifact),
compacts it, and writes into DIR (default export/<run id>; files already there are replaced only with
--overwrite; each file is written whole or not at all):
  model_pNN.safetensors  the compacted float32 weights, layer i as weight_i [out, in] or, where that
                         takes fewer bytes (more than a third zeros), as CSR: weight_i.values (float32),
                         weight_i.col (int16 below 32768 inputs, else int32), weight_i.rowptr (int32);
                         bias_i [out]
  model_pNN.json         input_window [lo, hi): the pixels layer 0 reads (0..783; pixels inside
                         it that no weight reads have zero columns), input_index (the live
                         pixels), widths (live inputs, units), layer_shapes, provenance, counts
  model_pNN.onnx         the same network with the input window: x [N, 784] -> logits [N, 10],
                         dense compacted weights, hidden widths padded with zero units to a multiple
                         of 16 as in CompactMLP's forward, checked against torch with onnxruntime
                         (max abs difference <= 1e-5)
  with --format quantised (not by default: a point-estimate method's precision needs the run's dataset):
  model_pNN.q            the compacted net at the precision the evaluation stored it at (suite.evaluate.bits:
                         the same fraction bits, recomputed, and checked equal to the run's logged bits_lK_pNN,
                         stored_bytes_pNN and bits_format_pNN), bit-packed as bits.py counts it
                         (suite.evaluate.packed): 8 + 4 x layers bytes of file header, then exactly
                         stored_bytes_pNN rounded up to a whole byte; read back and compared before writing
  model_pNN.q.onnx       the dequantised net (float32 weights code x 2^-F), checked with onnxruntime against
                         the quantised torch net (max abs difference <= 1e-5)
  model_pNN.json         its "quantised" entry: the file's bytes, the stored bits, the compression
                         32 x dense parameters / file bits, fraction and value bits and format per layer
Inputs are as in training: the 28x28 image, row-major, as pixel / 255 in [0, 1]. Outputs are
logits; softmax gives the probabilities of the deterministic prediction (Method.predict).

Loader without this project (numpy only):

    import json
    import numpy as np

    def load(stem):  # stem: the path without its suffix, e.g. "export/RUN/model_p98"
        raw = open(stem + ".safetensors", "rb").read()
        n = int.from_bytes(raw[:8], "little")  # safetensors: header length, JSON header, then the data
        head = json.loads(raw[8:8 + n])
        kind = {"F32": np.float32, "I16": np.int16, "I32": np.int32}
        t = {k: np.frombuffer(raw, kind[v["dtype"]], int(np.prod(v["shape"])), 8 + n + v["data_offsets"][0])
             .reshape(v["shape"]) for k, v in head.items() if k != "__metadata__"}
        meta = json.load(open(stem + ".json"))
        (lo, hi), shapes = meta["input_window"], meta["layer_shapes"]
        last = len(shapes) - 1

        def weight(i):  # dense [out, in], from CSR where the file stores it so
            if f"weight_{i}" in t:
                return t[f"weight_{i}"]
            w = np.zeros(shapes[i], np.float32)
            rows = np.repeat(np.arange(shapes[i][0]), np.diff(t[f"weight_{i}.rowptr"]))
            w[rows, t[f"weight_{i}.col"]] = t[f"weight_{i}.values"]
            return w

        ws = [weight(i) for i in range(last + 1)]

        def predict(x):  # x: float32 [N, 784] -> logits [N, 10]
            h = x[:, lo:hi]
            for i in range(last + 1):
                h = h @ ws[i].T + t[f"bias_{i}"]
                h = np.maximum(h, 0) if i < last else h
            return h
        return predict

Quantised file without this project: copy decode() from suite/evaluate/packed.py (numpy only), then

    mask, layers = decode(open("export/RUN/model_p98.q", "rb").read())

    def predict_q(x):  # x: float32 [N, 784] -> logits [N, 10]
        h = x[:, mask]
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            h = np.maximum(h, 0) if i < len(layers) - 1 else h
        return h

Bayesian models export their point weights, the weights of the deterministic prediction (BBB: the
posterior mean; Sparse VD: theta; L0: theta times the test-time gate). The Monte Carlo ensemble
would need, per kept weight, its noise as well (BBB: sigma; Sparse VD: alpha theta^2; L0: the gate's
log alpha), a compaction mask over weights whose mean or noise is nonzero and no folding of
input-less units (BBB's biases are random too), and a predictor that draws n weight samples and
averages n softmax outputs: about n times the compacted forward plus n draws of every kept weight
(suite.evaluate.latency's latency_mc_bB_ms measures that on the dense model). It is not exported here.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

from . import preflight, prune, stored
from .config import TrialConfig
from .data import DataError, load_arrays, make_splits
from .evaluate import bits, compact, packed
from .evaluate.levels import validation
from .methods import Method
from .preflight import PreflightError

FORMATS = ("safetensors", "onnx", "quantised")
DEFAULT_FORMATS = ("safetensors", "onnx")  # quantised may need the dataset (the validation rule): asked for
NEEDS = {"safetensors": ("safetensors",), "onnx": ("onnx", "onnxscript"),
         "quantised": ("onnx", "onnxscript")}  # onnxruntime: the check, if present
SUFFIXES = {"safetensors": (".safetensors", ".json"), "onnx": (".onnx",), "quantised": (".q", ".q.onnx", ".json")}
TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The run cannot be exported as asked; the message names the fix."""


def require(formats: list[str]) -> None:
    """Fail before any work if a package the formats need is missing."""
    missing = [m for f in formats for m in NEEDS[f] if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"exporting {' and '.join(formats)} needs {', '.join(missing)}, not installed: "
                          'pip install "bayes-prune-bench[export]"')


def parse_level(text: str) -> float | str:
    """--level in percent as in the metric names (98 -> 0.98), or nat (the method's own mask)."""
    if text == "nat":
        return text
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0 <= p <= 100 or 0 < p < 1:
        raise ExportError(f"--level {text}: give the sparsity in percent, 0..100 (98 for test_acc_p98), or nat.")
    return p / 100


def outputs(out: Path, level: float | str, formats: list[str]) -> list[Path]:
    """The files an export writes."""
    stem = out / f"model_{prune.level_tag(level)}"
    return list(dict.fromkeys(Path(f"{stem}{suffix}") for f in formats for suffix in SUFFIXES[f]))


def check_out(out: Path, level: float | str, formats: list[str], overwrite: bool) -> None:
    """Before any work: --out is a folder (or will be) that takes files, and holds none of the files
    this export writes unless --overwrite (another run's export of the same level has the same names)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file: give a folder (the export writes several files into it).")
    try:
        preflight.check_writable_folder(out, "--out")
    except PreflightError as e:
        raise ExportError(str(e)) from None
    there = [p.name for p in outputs(out, level, formats) if p.exists()]
    if there and not overwrite:
        raise ExportError(f"--out {out} already holds {', '.join(there)}: pass --overwrite to replace them, or "
                          "another --out.")


def evaluated_levels(run) -> list[str]:
    """The level tags (p00, p90, nat) the run's trial evaluated: those with a test_acc metric."""
    tags = [m[len("test_acc_"):] for m in run.data.metrics if re.fullmatch(r"test_acc_(p\d+|nat)", m)]
    return sorted(tags, key=lambda t: (t == "nat", int(t[1:]) if t != "nat" else 0))


def load_run(run_id: str, uri: str, level: float | str, dst: Path) -> tuple[stored.Stored, dict[str, float], dict[str, str]]:
    """What the run stored (suite.stored.read: config, model.pt, the level's levels/pNN.npz where
    its protocol retrains it), downloaded into dst, and its logged metrics and tags; the run must have
    evaluated `level` (another level's pruned model was never measured)."""
    try:
        client = preflight.open_store(uri)
    except PreflightError as e:
        raise ExportError(str(e)) from None
    try:
        run = client.get_run(run_id)
    except Exception as e:  # MLflow raises its own exception types per store
        raise ExportError(f"run {run_id} not found in {uri}: check --run-id and --tracking-uri ({e})") from e
    if run.info.status != "FINISHED":
        raise ExportError(f"run {run_id} is {run.info.status}, not FINISHED: its artifacts may be missing; "
                          "finish it (python -m suite.run resumes it) or pick a finished run.")
    levels = evaluated_levels(run)
    if prune.level_tag(level) not in levels:
        raise ExportError(f"run {run_id} was not evaluated at level {prune.level_tag(level)}: its levels are "
                          f"{', '.join(levels) or 'none'}; pass one of them as --level (98 for p98).")
    try:
        return stored.read(Path(client.download_artifacts(run_id, "", str(dst))), [level]), run.data.metrics, run.data.tags
    except stored.MissingArtifacts as e:
        raise ExportError(f"run {run_id}: {e}; it cannot be exported at {prune.level_tag(level)}.") from None


def layer_tensors(w: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """Layer weight `w` [out, in] as the loader reads it: dense, or CSR where that takes fewer bytes."""
    col = torch.int16 if w.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    csr = w.to_sparse_csr()
    parts = {f"{name}.values": csr.values(), f"{name}.col": csr.col_indices().to(col),
             f"{name}.rowptr": csr.crow_indices().to(torch.int32)}
    if sum(t.numel() * t.element_size() for t in parts.values()) < w.numel() * w.element_size():
        return {k: v.contiguous() for k, v in parts.items()}
    return {name: w}


def write_json(c: compact.CompactMLP, meta: dict, stem: Path) -> Path:
    """model_pNN.json at `stem`: meta and the compacted net's shapes."""
    path = Path(f"{stem}.json")
    path.write_text(json.dumps({**meta, "input_window": [c.lo, c.hi], "input_index": c.index.tolist(), "widths": c.widths,
                                "layer_shapes": [list(w.shape) for w, _ in c.layers()]}, indent=1))
    return path


def write_safetensors(c: compact.CompactMLP, meta: dict, stem: Path) -> list[Path]:
    """model_pNN.safetensors and model_pNN.json at `stem`."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    tensors = {}
    for i, (w, b) in enumerate(c.layers()):
        tensors.update(layer_tensors(w, f"weight_{i}"), **{f"bias_{i}": b})
    try:
        save_file(tensors, f"{stem}.safetensors", metadata={"json": stem.name + ".json"})
    except SafetensorError as e:  # its I/O errors (a full disk) are not OSErrors
        raise OSError(str(e)) from e
    return [Path(f"{stem}.safetensors"), write_json(c, meta, stem)]


def write_onnx(c: compact.CompactMLP, x: torch.Tensor, stem: Path) -> tuple[Path, str]:
    """The ONNX file (dynamic batch size) and how it was checked."""
    path = Path(f"{stem}.onnx")
    torch.onnx.export(c, (x[:2],), str(path), input_names=["x"], output_names=["logits"], external_data=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    if importlib.util.find_spec("onnxruntime") is None:
        return path, "not checked (onnxruntime is not installed)"
    import onnxruntime
    got = onnxruntime.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    diff = float((torch.from_numpy(got) - c(x)).abs().max())
    if not diff <= TOLERANCE:
        raise ExportError(f"onnxruntime's logits differ from torch's by {diff:.2e} (> {TOLERANCE}): "
                          f"{path} is not a faithful export; please report it with the run.")
    return path, f"onnxruntime matches torch: max abs difference {diff:.1e} on {len(x)} inputs"


def stored_precision(cfg: TrialConfig, m: Method, c: compact.CompactMLP) -> tuple[list[int | None], str]:
    """The fraction bits of the level's stored layers as the evaluation chose them (bits.precision): the
    posterior variances, or the run's own validation split (make_splits of its dataset, sizes and seed)."""
    val = None
    if m.weight_variance() is None and cfg.val_size:  # val_size 0: no validation split (levels.validation)
        try:
            arrays = load_arrays(cfg.dataset, cfg.data_dir or None)
        except DataError as e:
            raise ExportError(f"the validation rule needs {cfg.dataset}'s validation split: {e}") from None
        val = validation(cfg, make_splits(arrays, cfg.val_size, cfg.train_subset, cfg.seed, torch.device("cpu")))
    chosen = bits.precision(m, c, val)
    if chosen is None:
        raise ExportError(f"{cfg.method} has no posterior variances and the run has no validation split (val_size 0): "
                          "its evaluation chose no precision, so there is none to store; export safetensors or onnx.")
    return chosen


def check_logged(metrics: dict[str, float], tags: dict[str, str], tag: str, value_bits: list[int], stored_bits: int,
                 formats: list[str]) -> str:
    """The recomputed storage against what the run logged at `tag` (bits_lK_, stored_bytes_, bits_format_):
    an error naming every difference; a run evaluated before bits.py existed logged none (not checked)."""
    want = {**{f"bits_l{i + 1}_{tag}": float(b) for i, b in enumerate(value_bits)}, f"stored_bytes_{tag}": stored_bits / 8}
    differ = [f"{k} logged {metrics[k]:g}, now {v:g}" for k, v in want.items() if k in metrics and metrics[k] != v]
    logged_formats = tags.get(f"bits_format_{tag}")
    if logged_formats is not None and logged_formats != ",".join(formats):
        differ.append(f"bits_format_{tag} logged {logged_formats}, now {','.join(formats)}")
    if differ:
        raise ExportError(f"the stored precision recomputed at {tag} is not the one the run logged ({'; '.join(differ)}): "
                          "it was evaluated by other code or on another device; evaluate it again here (python -m "
                          "suite.evaluate --run-id ID --force) and export it then.")
    if not any(k in metrics for k in want) and logged_formats is None:
        return f"not checked against the run: it logged no stored_bytes_{tag} (evaluated before bits.py)"
    return f"equal to the run's logged bits_lK_{tag}, stored_bytes_{tag} and bits_format_{tag}"


def quantised_net(c: compact.CompactMLP, q: bits.Layers) -> compact.CompactMLP:
    """The compacted net with its stored layers q (bits.quantised of bits.stored_layers(c)): the first
    layer's live columns put back into the input window."""
    (w0, b0), *rest = q
    window = w0.new_zeros(w0.shape[0], c.hi - c.lo)
    window[:, c.index - c.lo] = w0
    return compact.CompactMLP(c.index, [(window, b0), *rest], c.dense_widths).eval()


def quantised_level(cfg: TrialConfig, m: Method, c: compact.CompactMLP, tag: str, metrics: dict[str, float], tags: dict[str, str]
             ) -> tuple[bytes, compact.CompactMLP, dict, str]:
    """The level's quantised net: model_pNN.q's bytes (suite.evaluate.packed), the same net in torch, its
    entry of model_pNN.json and a report line. The file read back by packed.decode must give exactly the
    quantised layers, and its body exactly bits.stored_bits: that is what makes its size the figure."""
    frac, rule = stored_precision(cfg, m, c)
    layers = bits.stored_layers(c)
    q, value_bits = bits.quantised(layers, frac)
    n_bits, formats = bits.stored_bits(q, value_bits, m.sizes[0])
    logged = check_logged(metrics, tags, tag, value_bits, n_bits, formats)
    raw = packed.encode(layers, frac, c.index, m.sizes[0])
    mask, back = packed.decode(raw)
    if mask.nonzero()[0].tolist() != c.index.tolist() or not all(
            torch.equal(torch.from_numpy(w), wq) and torch.equal(torch.from_numpy(b), bq) for (w, b), (wq, bq) in zip(back, q)):
        raise ExportError("model_pNN.q does not read back as the quantised net: please report it with the run.")
    front = packed.file_header_bytes(len(q))
    entry = {"file": f"model_{tag}.q", "bytes": len(raw), "file_header_bytes": front, "stored_bits": n_bits,
             "stored_bytes": n_bits / 8, "compression": 32 * m.n_params / (8 * len(raw)),
             "compression_stored": 32 * m.n_params / n_bits, "rule": rule, "fraction_bits": frac,
             "value_bits": value_bits, "formats": formats, "logged": logged}
    line = (f"  model_{tag}.q = {front} bytes of file header + ceil({n_bits} stored bits / 8) = {len(raw):,} bytes "
            f"(stored_bytes_{tag} {n_bits / 8:g}, {rule}: F {frac}, b {value_bits}, {','.join(formats)}); {logged}")
    return raw, quantised_net(c, q), entry, line


@torch.no_grad()
def export(run_id: str, level: float | str, uri: str, out: Path, formats: list[str]) -> list[str]:
    """Write the formats for one run and level; returns the report lines (sizes, checks)."""
    require(formats)
    with tempfile.TemporaryDirectory() as d:
        run, logged, tags = load_run(run_id, uri, level, Path(d))
        pt_bytes = (Path(d) / "model.pt").stat().st_size
    cfg, proto = run.cfg, stored.protocol(run)
    # the level as the run evaluated it: --level 98 is the run's p98, which may be 0.984
    level = next(p for p in proto.levels(cfg) if prune.level_tag(p) == prune.level_tag(level))
    model, m = proto.model, stored.model_at(proto, run, level)
    c = compact.compact(m)
    x = torch.rand(1000, 784, generator=torch.Generator().manual_seed(0))
    diff = float((c(x) - m(x)).abs().max())
    if not diff <= TOLERANCE:
        raise ExportError(f"the compacted network differs from the pruned model by {diff:.2e}: please report it.")
    tag = prune.level_tag(level)
    # the grid key finds the run again where its id changed (a runs file imported into another store)
    meta = {"run_id": run_id, "grid_key": cfg.grid_key(), "method": cfg.method, "label": cfg.label(),
            "dataset": cfg.dataset, "seed": cfg.seed, "level": tag,
            "pruner": cfg.resolved_pruner, "prune_scope": cfg.prune_scope, "prune_structure": cfg.prune_structure,
            "prune_biases": cfg.prune_biases,
            "sparsity": prune.measured_sparsity(m, x[:10], cfg.prune_biases)[0], "dense_widths": c.dense_widths,
            "weights": "point estimate (Method.point_weights)", "activation": "relu between layers, none after the last",
            "input": "x [N, 784] float32: 28x28 pixels row-major / 255", "output": "logits [N, 10]",
            **compact.stats(m, c)}
    dense = 4 * model.n_params
    lines = [f"run {run_id} ({cfg.label()} on {cfg.dataset}) at {tag}: widths {c.dense_widths} -> {c.widths}, "
             f"compacted forward matches the pruned model (max abs difference {diff:.1e})",
             f"  model.pt (training state, every parameter kind): {pt_bytes:>11,} bytes",
             f"  dense float32 point weights:                     {dense:>11,} bytes"]
    if "quantised" in formats:
        raw, cq, meta["quantised"], line = quantised_level(cfg, m, c, tag, logged, tags)
        lines.append(line)
    files = []
    try:  # into a temporary folder inside `out` (one file system: the renames are atomic), then renamed
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as d:
            stem = Path(d) / f"model_{tag}"
            written = write_safetensors(c, meta, stem) if "safetensors" in formats else []
            if "onnx" in formats:
                path, check = write_onnx(c, x, stem)
                written.append(path)
                lines.append(f"  {check}")
            if "quantised" in formats:
                Path(f"{stem}.q").write_bytes(raw)
                path, check = write_onnx(cq, x, Path(f"{stem}.q"))
                written += [Path(f"{stem}.q"), path] + ([] if "safetensors" in formats else [write_json(c, meta, stem)])
                lines.append(f"  dequantised net: {check}")
            for p in written:
                files.append(out / p.name)
                os.replace(p, files[-1])
    except OSError as e:  # e.g. the disk filled up: the temporary folder went with what it held
        raise ExportError(f"could not write into {out} ({e.strerror or e}): no file is half-written; free some "
                          "space or pick another --out.") from None
    lines += [f"  {p}: {p.stat().st_size:>11,} bytes ({dense / p.stat().st_size:.1f}x smaller than dense)"
              for p in files if p.suffix != ".json"]
    lines += [f"  {p}: {p.stat().st_size:>11,} bytes" for p in files if p.suffix == ".json"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-id", required=True, help="MLflow run id of a finished trial")
    ap.add_argument("--level", required=True, help="sparsity in percent as in the metric names (98), or nat")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)")
    ap.add_argument("--out", help="output folder (default: export/<run id>)")
    ap.add_argument("--format", action="append", choices=FORMATS,
                    help="safetensors (+ JSON), onnx, or quantised (model_pNN.q at the level's stored precision, its "
                    "dequantised ONNX, + JSON); repeat for several (default: safetensors and onnx)")
    ap.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export in --out "
                    "(default: refuse)")
    args = ap.parse_args(argv)
    out = Path(args.out or Path("export") / args.run_id)
    try:
        formats = args.format or list(DEFAULT_FORMATS)
        require(formats)
        level = parse_level(args.level)
        check_out(out, level, formats, args.overwrite)
        for line in export(args.run_id, level, preflight.tracking_uri(args.tracking_uri), out, formats):
            print(line)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
