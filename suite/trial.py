"""One trial: data -> model -> training -> pruning sweep -> evaluation -> results. No Ray, no MLflow.

    python -m suite.trial --method bbb --dataset mnist --seed 0 --epochs 1 --train-subset 5000 --json out.json
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import collapse, methods, preflight, prune
from .config import ConfigError, TrialConfig, all_keys, field_docs, from_dict
from .data import Arrays, DataError, Splits, images, load_arrays, make_splits
from .dense import HISTORY
from .evaluate import EVAL_VERSION
from .evaluate.level import histograms, level_seed, weight_std
from .evaluate.levels import LevelEvaluator, OnLevel, progress_line, validation
from .evaluate.ood import PARTNER
from .fpmode import flush_denormals
from .methods import Method
from .preflight import PreflightError
from .protocols.base import OnEpoch
from .train import fit_epochs, make_optimizer, train


@dataclass
class TrialResult:
    """Everything a trial produces; metric names are the MLflow contract (ARCHITECTURE.md, README metric table)."""

    config: TrialConfig
    metrics: dict[str, float]                 # final scalars: test_acc_p90, train_wall_s, ...
    history: list[dict]                       # one dict per epoch
    info: dict[str, str] = field(default_factory=dict)   # device, kernels chosen: strings, logged as tags
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # npz path -> arrays
    state_dict: dict = field(default_factory=dict)       # the trained, unpruned model

    def to_json(self) -> dict:
        return {"config": self.config.to_dict(), "grid_key": self.config.grid_key(), "metrics": self.metrics,
                "history": self.history, "info": self.info}


def write_artifacts(r: TrialResult, out: Path) -> None:
    """The MLflow artifacts of a trial: model.pt (state dict, loads with weights_only=True),
    weights_hist.npz, snr_hist.npz (bbb), levels/pNN.npz (each retrained level: prune.held_state)
    config.json and history.json (training proper's epochs: with model.pt, the dense net other
    protocols start from, suite/dense.py). Compressed npz: a packed mask of a sparse level shrinks several-fold."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(r.state_dict, out / "model.pt")
    (out / HISTORY).write_text(json.dumps(r.history))
    for name, arrays in r.artifacts.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / name, **arrays)
    (out / "config.json").write_text(json.dumps(r.config.to_dict(), indent=1))


def check_compiler(cfg: TrialConfig) -> None:
    """compile=true on CPU needs a C++ compiler for torch.compile's generated code: fail up front."""
    if cfg.method_cls.compiled_kernels and cfg.compile and resolve_device(cfg.device).type == "cpu" and not (
            shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        raise ConfigError("compile=true needs a C++ compiler on CPU (none on PATH): install g++ or clang++, "
                          "or pass --compile false (same numbers, slower BBB steps).")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA GPU is visible: use --device cpu or auto.")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


class PeakMemory:
    """Peak memory that training adds, in MB. CUDA: the allocator's peak. CPU (Linux): the process's
    high-water RSS (VmHWM, reset through /proc/self/clear_refs at the start) minus the RSS before
    training, so the interpreter, torch and the dataset copy do not drown the model's own memory.
    Elsewhere: the process's peak RSS (ru_maxrss), baseline included."""

    def __init__(self, device: torch.device):
        self.device, self.base = device, None  # base: RSS (MB) at a successful high-water reset
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            return
        try:  # some kernels and containers refuse the reset: then fall back to ru_maxrss
            Path("/proc/self/clear_refs").write_text("5")
            self.base = self._proc("VmRSS")
        except OSError:
            pass

    @staticmethod
    def _proc(field: str) -> float | None:
        try:
            lines = Path("/proc/self/status").read_text().splitlines()
        except OSError:
            return None
        return next((int(ln.split()[1]) / 1024 for ln in lines if ln.startswith(field + ":")), None)  # kB

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 1e6
        hwm = self._proc("VmHWM") if self.base is not None else None
        return hwm - self.base if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ResumeError(ValueError):
    """A resume state belongs to another grid point (its grid_key differs): it is refused, not used."""


def run_trial(cfg: TrialConfig, on_epoch: OnEpoch | None = None, arrays: Arrays | None = None,
              resume: dict | None = None, evaluate: bool = True, ood_images: np.ndarray | None = None,
              on_level: OnLevel | None = None) -> TrialResult:
    """Train, then evaluate every level of cfg.protocol (suite/protocols/); pure in cfg.
    evaluate=False stops after training (a recipe search: it selects on validation metrics only and
    never touches the test split). ood_images: the out-of-distribution test images, uint8
    [N, 28, 28] (the x_test of dataset evaluate.ood.PARTNER[cfg.dataset]); None: loaded here, before
    training, so a missing dataset fails before any work is done (not needed when evaluate=False).
    on_level: called as each level is evaluated (evaluate.levels.LevelDone), for progress lines.

    Timing: compile_s (torch.compile's code generation, triggered on one batch before training),
    train_wall_s (the epochs, a shared dense net's included), eval_wall_s (pruning, fine-tuning, evaluation, latency) and
    total_wall_s (everything, setup included; epochs trained before a resume count with their times,
    not those of a shared dense net: they are its trainer's)."""
    t_start = time.perf_counter()
    check_compiler(cfg)
    device = resolve_device(cfg.device)
    if resume is not None and resume.get("grid_key") != cfg.grid_key():
        raise ResumeError(f"resume state of grid point {resume.get('grid_key')} offered to {cfg.grid_key()}: "
                          "delete that resume folder or run with --rerun.")
    torch.manual_seed(cfg.seed)
    data = make_splits(arrays or load_arrays(cfg.dataset, cfg.data_dir or None),
                       cfg.val_size, cfg.train_subset, cfg.seed, device)
    if evaluate:
        if ood_images is None:
            ood_images = load_arrays(PARTNER[cfg.dataset], cfg.data_dir or None).x_test
        x_ood = images(ood_images, device)
    model = methods.build(cfg).to(device)
    opt = make_optimizer(cfg, model)
    t0 = time.perf_counter()
    model.compile_warmup(data.x_train[:cfg.batch_size], data.y_train[:cfg.batch_size])
    compile_s = time.perf_counter() - t0
    history: list[dict] = []
    # level tag -> progress or finished results of the protocol's levels that retrain; the state's
    # key stays "finetune" so resume folders written before protocols were plug-ins still resume
    levels: dict[str, dict] = {}
    dense = resume.get("dense") if resume is not None else None  # started from a shared dense net (suite/dense.py)
    if resume is not None:
        model.load_state_dict(resume["model"])
        if "optimizer" in resume:  # a shared dense net carries none: training is over
            opt.load_state_dict(resume["optimizer"])
        history, levels = list(resume["history"]), dict(resume.get("finetune", {}))

    def state() -> dict:
        return {"grid_key": cfg.grid_key(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "history": history, "finetune": levels, "progress": epochs_trained(history, levels),
                **({"dense": dense} if dense else {})}

    def after_epoch(log: dict) -> None:
        cfg.protocol_cls.watch_training(cfg, log["epoch"], model, opt, levels)
        if on_epoch is not None:
            on_epoch(log, state)

    memory = PeakMemory(device)
    cfg.protocol_cls.watch_training(cfg, len(history), model, opt, levels)
    train(model, opt, data, cfg, history, after_epoch)
    out = {"train_wall_s": sum(h["epoch_time_s"] for h in history), "compile_s": compile_s,
           "n_params": float(model.n_params), "peak_mem_mb": memory.peak_mb(),
           "step_time_ms": statistics.median(h["step_time_ms"] for h in history),
           **fit_epochs(history, cfg.resolved_fit_target)}
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if model.weight_noise:
        info["weight_noise"] = model.weight_noise
    if collapse.collapsed(history[-1]["val_acc"], model.sizes[-1]):
        info[collapse.TAG] = "true"  # info becomes run tags
    # epochs an earlier attempt of this trial trained count with their times; a shared net's do not
    resumed = sum(h["epoch_time_s"] for h in history[dense["epochs"] if dense else 0:len(resume["history"]) if resume else 0])
    if dense:
        info["dense_from"] = dense["from"]
    if not evaluate:  # a search's recipe resumes at every rung it passes
        out["total_wall_s"] = time.perf_counter() - t_start + resumed
        return TrialResult(cfg, out, history, info)
    t_eval = time.perf_counter()
    m, i, artifacts = evaluate_pruned(model, cfg, data, levels, on_epoch, state, x_ood, on_level)
    out.update(m)
    info.update(i)
    out["eval_wall_s"] = time.perf_counter() - t_eval
    out["total_epochs"] = float(epochs_trained(history, levels))
    out["total_wall_s"] = time.perf_counter() - t_start + resumed
    return TrialResult(cfg, out, history, info, artifacts, {k: v.cpu() for k, v in model.state_dict().items()})


def epochs_trained(history: list[dict], levels: dict[str, dict]) -> int:
    """Every epoch the trial has trained: training proper plus each retraining phase of its levels
    (counted from their histories, so a plug-in protocol's retraining counts too)."""
    return len(history) + sum(len(f.get("history", ())) for f in levels.values())


@torch.no_grad()
def evaluate_pruned(model: Method, cfg: TrialConfig, data: Splits, store: dict[str, dict] | None = None,
                    on_epoch: OnEpoch | None = None, state: Callable[[], dict] | None = None,
                    x_ood: torch.Tensor | None = None, on_level: OnLevel | None = None):
    """The pruning sweep on the test split: every level of the protocol gets its model (a pruned
    copy, retrained if the protocol says so) and is evaluated (suite.evaluate.levels, the path a run's
    stored weights are evaluated by too: suite.stored; x_ood: out-of-distribution inputs, [N, 784] on
    the model's device; on_level: called as each level is evaluated). `store` holds the resumable
    progress and the finished results of the levels that retrain. Returns (metrics, info, artifacts);
    info carries eval_version, the oldest version of the evaluation code among the levels' metrics
    (suite.evaluate.EVAL_VERSION, unless a resumed trial finished a level under older code and kept
    no weights to evaluate it again)."""
    store = {} if store is None else store
    model.eval()
    proto = cfg.protocol_cls(cfg, model, data, store, on_epoch, state)
    out, info = {}, {"pruner": cfg.resolved_pruner, "protocol": cfg.protocol}
    masks = [(p, *proto.mask(p)) for p in proto.levels(cfg)]
    thresholds = [thr for p, _, thr in masks if not isinstance(p, str)]
    evaluator = LevelEvaluator(cfg, [p for p, _, _ in masks], data.x_test, data.y_test, x_ood, on_level,
                               validation(cfg, data))
    versions = []  # the evaluation version of each level's metrics: the run is tagged with the oldest
    for i, (p, keep, _) in enumerate(masks):
        tag = prune.level_tag(p)
        done = store.get(tag, {})
        if "metrics" in done and done.get("eval_version", 1) != EVAL_VERSION and "weights" in done:
            # finished by older evaluation code before an interruption: evaluated again from its kept weights,
            # the protocol's own metrics (from retraining) kept
            level, level_info = evaluator.evaluate(i, prune.held_model(model, done["weights"]), time.perf_counter())
            done.update(metrics={**done["metrics"], **level}, info=level_info, eval_version=EVAL_VERSION)
        if "metrics" not in done:
            started = time.perf_counter()
            progress = store.setdefault(tag, {}) if proto.retrains(p) else {}
            # reseed per level, before its work and again before its evaluation (evaluator.evaluate): the Monte Carlo
            # predictions depend neither on how training (or retraining) used the RNG nor on how many
            # timed repetitions the previous level's latency phase happened to run
            torch.manual_seed(level_seed(cfg.seed, i))
            m, own = proto.prune_level(i, p, keep, progress)
            own[f"model_epochs_{tag}"] = float(proto.model_epochs(p, progress))
            # a retrained level's weights, taken before its evaluation (held_state draws no random numbers)
            weights = prune.held_state(m) if proto.retrains(p) else None
            level, level_info = evaluator.evaluate(i, m, started)
            done = {"metrics": {**own, **level}, "info": level_info, "eval_version": EVAL_VERSION}
            if proto.retrains(p):  # kept, with its sparse weights, so a resumed trial neither redoes nor loses the level
                store[tag] = done = {"history": progress.get("history", []), **done, "weights": weights}
        out.update(done["metrics"])
        info.update(done["info"])
        versions.append(done.get("eval_version", 1))  # 1: finished before levels recorded it, and no weights kept
    info["eval_version"] = str(min(versions))
    out["weight_std"] = weight_std(model)
    # the levels model.pt and the mask cannot rebuild: those retrained (a level finished by a trial
    # state written before levels were kept has no weights; suite.export says so)
    kept = {f"levels/{prune.level_tag(p)}.npz": {k: v.numpy() for k, v in store[prune.level_tag(p)]["weights"].items()}
            for p, _, _ in masks if proto.retrains(p) and "weights" in store[prune.level_tag(p)]}
    return out, info, {**histograms(model, cfg, thresholds), **kept}


def summary(r: TrialResult) -> str:
    """A short human-readable table of the pruning sweep."""
    c, m = r.config, r.metrics
    lines = [f"{c.label()} on {c.dataset}, seed {c.seed}, {c.epochs} epochs ({r.info['device']}): "
             f"compile {m['compile_s']:.1f} s, train {m['train_wall_s']:.1f} s, eval {m['eval_wall_s']:.1f} s, "
             f"total {m['total_wall_s']:.1f} s, "
             f"best val_acc {max(h['val_acc'] for h in r.history):.4f}, "
             f"epochs_to_fit {m.get('epochs_to_fit', 'never')}, pruner {r.info['pruner']}, protocol {c.protocol}",
             f"{'level':>6} {'sparsity':>8} {'acc':>7} {'acc_mc':>7} {'nll':>7} {'ece':>6} "
             f"{'dense_b1':>9} {'sparse_b1':>9} {'dense_b1k':>9} {'sparse_b1k':>10} {'csr_kB':>8} "
             f"{'compact widths':>14} {'compact_b1k':>11} {'x_b1k [q25, q75]':>18} {'flops_x':>7} {'ood_auroc':>9}"]
    for p in c.protocol_cls.levels(c):
        t = prune.level_tag(p)
        mc = f"{m[f'test_acc_mc_{t}']:.4f}" if f"test_acc_mc_{t}" in m else "-"
        widths = "-".join(str(int(m[f"compact_width_l{j}_{t}"])) for j in range(len(c.hidden) + 1))
        auroc = f"{m[f'ood_auroc_entropy_{t}']:.4f}" if f"ood_auroc_entropy_{t}" in m else "-"
        # FLOPs of the compacted net that runs (its input window, padded widths), not of its live units
        flops = m[f"flops_run_{t}"]
        fewer = m[f"flops_dense_{t}"] / flops if flops else float("inf")  # inf: every weight pruned
        x = [m[f"latency_speedup_compact_b1000{q}_{t}"] for q in ("", "_q25", "_q75")]  # per-round dense / compacted
        faster = f"{x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}]"
        lines.append(f"{t:>6} {m[f'sparsity_{t}']:8.4f} {m[f'test_acc_{t}']:7.4f} {mc:>7} {m[f'test_nll_{t}']:7.4f} "
                     f"{m[f'test_ece_{t}']:6.4f} {m[f'latency_dense_b1_ms_{t}']:8.3f}ms "
                     f"{m[f'latency_sparse_b1_ms_{t}']:8.3f}ms {m[f'latency_dense_b1000_ms_{t}']:8.2f}ms "
                     f"{m[f'latency_sparse_b1000_ms_{t}']:9.2f}ms {m[f'size_csr_bytes_{t}'] / 1e3:8.1f} "
                     f"{widths:>14} {m[f'latency_compact_b1000_ms_{t}']:9.2f}ms {faster:>18} "
                     f"{fewer:6.1f}x {auroc:>9}")
    if r.info.get(collapse.TAG) == "true":
        lines.append(collapse.warning(r.history[-1]["val_acc"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.trial", description="Run one trial in-process (no Ray, no MLflow).")
    docs = field_docs()
    for name in all_keys():  # common fields, then every method's own settings (an error for other methods)
        ap.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="V", help=docs.get(name))
    ap.add_argument("--json", default=None, help="write config, metrics, per-epoch history and info as JSON here")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = vars(ap.parse_args(argv))
    json_path, threads = args.pop("json"), args.pop("threads")
    try:
        cfg = from_dict({k: v for k, v in args.items() if v is not None}, where="command line")
        resolve_device(cfg.device)
        check_compiler(cfg)
    except ConfigError as e:
        ap.error(str(e))
    if threads is not None and threads < 1:
        ap.error(f"--threads={threads} is invalid: use an integer >= 1.")
    try:  # before training: a result that cannot be written is hours lost
        if json_path:
            preflight.check_output_file(Path(json_path), "--json")
    except PreflightError as e:
        ap.error(str(e))
    flushed = flush_denormals()
    if threads:
        torch.set_num_threads(threads)

    def progress(log: dict, _state) -> None:
        kl = f" kl {log['train_kl']:.4f}" if "train_kl" in log else ""
        print(f"epoch {log['epoch']:3d}/{cfg.total_epochs}  loss {log['train_loss']:.4f} nll {log['train_nll']:.4f}{kl}"
              f"  val_acc {log['val_acc']:.4f}  {log['epoch_time_s']:.1f}s", flush=True)
    try:
        result = run_trial(cfg, progress, on_level=lambda d: print(progress_line(d), flush=True))
    except (DataError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.info["denormals_flushed"] = str(flushed).lower()
    print(summary(result))
    if json_path:
        try:
            write_whole(Path(json_path), json.dumps(result.to_json(), indent=1))
        except OSError as e:  # e.g. the disk filled up since the check
            print(f"error: could not write --json {json_path} ({e.strerror or e}); nothing was written.", file=sys.stderr)
            return 2
        print(f"wrote {json_path}")
    return 0


def write_whole(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a temporary file in its folder, renamed over it."""
    f = tempfile.NamedTemporaryFile("w", dir=path.resolve().parent, prefix=f".{path.name}.", delete=False)
    try:
        with f:  # closing flushes: a full disk may only show here
            f.write(text)
        Path(f.name).replace(path)
    except BaseException:
        Path(f.name).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
