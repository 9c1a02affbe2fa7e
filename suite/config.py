"""TrialConfig: every knob of one trial, validated at the boundary; grid expansion from YAML.

A trial is a pure function of its TrialConfig. Fields marked runtime (device, data_dir) change
where a trial runs, not what it computes, so they are left out of the grid_key.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import difflib
import hashlib
import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METHODS = ("sgd", "bbb")
DATASETS = ("mnist", "fmnist")
OPTIMIZERS = ("adam", "sgd")
KL_WEIGHTINGS = ("blundell", "uniform")
PRUNE_SCOPES = ("global", "layer")
PRUNERS = ("auto", "magnitude", "snr", "random")
DEVICES = ("auto", "cpu", "cuda")
RUNTIME_FIELDS = ("compile", "device", "data_dir")
# Chosen so every reasonable method reaches them within 50 epochs (MNIST MLPs plateau near 98 %,
# Fashion-MNIST near 89-90 %); they mark "fitted", not "best".
FIT_TARGETS = {"mnist": 0.97, "fmnist": 0.87}
GRID_DIR = Path(__file__).resolve().parent.parent / "tune_configs"


class ConfigError(ValueError):
    """A config value or grid file is invalid; the message names the field and what is allowed."""


@dataclass(frozen=True)
class TrialConfig:
    """One grid point: method, data, optimisation, Bayesian prior, pruning and runtime options."""

    method: str = "sgd"
    """Training method: sgd (deterministic MLP, with dropout if dropout > 0) or bbb (Bayes by Backprop)."""
    dropout: float = 0.0
    """Dropout probability on hidden layers (and on the input if input_dropout); 0 disables it."""
    dataset: str = "mnist"
    """Dataset: mnist or fmnist (Fashion-MNIST)."""
    seed: int = 0
    """Seed for initialisation, data split and order, dropout masks and weight samples."""
    epochs: int = 50
    """Training epochs (no early stopping)."""
    batch_size: int = 100
    """Minibatch size."""
    lr: float = 1e-4
    """Learning rate."""
    optimizer: str = "adam"
    """Optimizer: adam or sgd (plain, no momentum)."""
    hidden: tuple[int, ...] = (500, 500)
    """Hidden layer widths; the network is 784-hidden...-10."""
    input_dropout: bool = True
    """Also apply dropout to the input pixels (the original study did)."""
    train_samples: int = 1
    """BBB: Monte Carlo weight samples per training step."""
    test_samples: int = 10
    """BBB: weight samples in the Monte Carlo ensemble prediction (test_acc_mc)."""
    prior_pi: float = 0.5
    """BBB scale-mixture prior: weight of the wide component (Blundell et al. 2015, eq. 7)."""
    prior_sigma1: float = 1.0
    """BBB prior: std of the wide component (e^0)."""
    prior_sigma2: float = math.exp(-6)
    """BBB prior: std of the narrow component (e^-6)."""
    kl_weighting: str = "blundell"
    """KL weight per minibatch i of M: blundell (2^(M-i)/(2^M-1), Blundell eq. 9) or uniform (1/M)."""
    sparsities: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99)
    """Pruning levels evaluated after training (fraction of prunable weights set to zero)."""
    prune_scope: str = "global"
    """global: one threshold over all layers; layer: the same fraction pruned in every layer."""
    prune_biases: bool = False
    """Also prune biases (counted in the sparsity denominator)."""
    pruner: str = "auto"
    """Importance score: auto (snr for bbb, magnitude otherwise), magnitude (|w| or |mu|), snr, random."""
    val_size: int = 10000
    """Validation examples held out of the 60k training set; 0 validates on the test set (as the study did)."""
    train_subset: int = 0
    """Train on only the first N training examples (0 = all); for tests and smoke runs."""
    fit_target: float | None = None
    """Validation accuracy that counts as fitted for epochs_to_fit; None = per-dataset default."""
    compile: bool = True
    """Runtime: fuse BBB's per-weight sample+KL passes with torch.compile (needs a C++ compiler on CPU); off = eager, same maths. Not part of the grid_key."""
    device: str = "auto"
    """Runtime: auto (cuda if available), cpu or cuda. Not part of the grid_key."""
    data_dir: str = ""
    """Runtime: dataset cache directory ('' = $BPB_DATA_DIR or ~/.cache/bayes-prune-bench). Not part of the grid_key."""

    def __post_init__(self) -> None:
        for name in ("hidden", "sparsities"):  # accept lists from Python callers; keep the config hashable
            object.__setattr__(self, name, tuple(getattr(self, name)))
        validate(self)

    @property
    def resolved_pruner(self) -> str:
        """The importance score actually used (auto resolved per method)."""
        if self.pruner != "auto":
            return self.pruner
        return "snr" if self.method == "bbb" else "magnitude"

    @property
    def resolved_fit_target(self) -> float:
        return FIT_TARGETS[self.dataset] if self.fit_target is None else self.fit_target

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"], d["sparsities"] = list(self.hidden), list(self.sparsities)
        return d

    def grid_key(self) -> str:
        """Stable short hash of everything that determines the trial's numbers."""
        d = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def run_name(self) -> str:
        """MLflow run name: label, dataset, seed and the start of the grid_key."""
        return f"{self.label().replace(' ', '')}-{self.dataset}-s{self.seed}-{self.grid_key()[:6]}"

    def run_tags(self) -> dict[str, str]:
        """Identity tags of the trial's MLflow run (analysis/ reads labels, order and colours from them)."""
        return {"grid_key": self.grid_key(), "method": self.method, "dataset": self.dataset,
                "dropout": str(self.dropout), "seed": str(self.seed), "label": self.label()}

    def label(self) -> str:
        """Human name of the method as the study tables use it (SGD, Dropout p, BBB)."""
        if self.method == "bbb":
            return "BBB"
        return f"Dropout {self.dropout:g}" if self.dropout > 0 else "SGD"


FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}


def field_docs() -> dict[str, str]:
    """The one-line docstring under each TrialConfig field (for --help and the README)."""
    body = ast.parse(inspect.getsource(TrialConfig)).body[0].body
    return {a.target.id: b.value.value for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}
_HINTS = typing.get_type_hints(TrialConfig)


def _fail(name: str, value, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"{name}={value!r} is invalid: allowed {allowed}.")


def validate(c: TrialConfig) -> None:
    """Range and choice checks; types were coerced by from_dict. Raises ConfigError naming the field."""
    choices = {"method": METHODS, "dataset": DATASETS, "optimizer": OPTIMIZERS, "kl_weighting": KL_WEIGHTINGS,
               "prune_scope": PRUNE_SCOPES, "pruner": PRUNERS, "device": DEVICES}
    for name, allowed in choices.items():
        if getattr(c, name) not in allowed:
            _fail(name, getattr(c, name), " | ".join(allowed))
    if not 0.0 <= c.dropout < 1.0:
        _fail("dropout", c.dropout, "a probability in [0, 1)")
    if c.method == "bbb" and c.dropout > 0:
        _fail("dropout", c.dropout, "0 with method=bbb (Bayes by Backprop is trained without dropout)")
    if c.pruner == "snr" and c.method != "bbb":
        _fail("pruner", c.pruner, "auto | magnitude | random for method=sgd (snr needs a posterior std)")
    positive = ("epochs", "batch_size", "train_samples", "test_samples")
    for name in positive:
        if getattr(c, name) < 1:
            _fail(name, getattr(c, name), "an integer >= 1")
    if not c.hidden or any(h < 1 for h in c.hidden):
        _fail("hidden", list(c.hidden), "a non-empty list of positive widths, e.g. [500, 500]")
    for name in ("lr", "prior_sigma1", "prior_sigma2"):
        if not getattr(c, name) > 0:
            _fail(name, getattr(c, name), "a number > 0")
    if not 0.0 < c.prior_pi < 1.0:
        _fail("prior_pi", c.prior_pi, "a weight in (0, 1)")
    if not c.prior_sigma2 < c.prior_sigma1:
        _fail("prior_sigma2", c.prior_sigma2, f"a std below prior_sigma1={c.prior_sigma1} (sigma2 is the narrow component)")
    if not 0 <= c.seed < 2 ** 31:
        _fail("seed", c.seed, "an integer in [0, 2^31)")
    if not c.sparsities or any(not 0.0 <= p <= 1.0 for p in c.sparsities):
        _fail("sparsities", list(c.sparsities), "a non-empty list of fractions in [0, 1]")
    if len({round(p * 100) for p in c.sparsities}) != len(c.sparsities):
        _fail("sparsities", list(c.sparsities), "distinct levels at whole-percent resolution (metric names use pNN)")
    if not 0 <= c.val_size < 60000:
        _fail("val_size", c.val_size, "an integer in [0, 60000)")
    if not 0 <= c.train_subset <= 60000 - c.val_size:
        _fail("train_subset", c.train_subset, f"0 (all) or 1..{60000 - c.val_size} (60000 minus val_size)")
    if c.fit_target is not None and not 0.0 < c.fit_target <= 1.0:
        _fail("fit_target", c.fit_target, "an accuracy in (0, 1] or null for the per-dataset default")


_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _scalar(t: type, v):
    """Strict scalar coercion: no bool-as-int, no 0.5-as-int, no number-as-string."""
    if t is bool:
        if isinstance(v, str) and v.lower() in _BOOLS:
            return _BOOLS[v.lower()]
        if not isinstance(v, bool):
            raise TypeError
        return v
    if isinstance(v, bool):
        raise TypeError
    if t is str:
        if not isinstance(v, str):
            raise TypeError
        return v
    if t is int and isinstance(v, float) and not v.is_integer():
        raise TypeError
    return t(v)


def _coerce(name: str, value):
    """Coerce a YAML/CLI value to the field's type, or fail naming the field and the expected type."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    try:
        if args and args[-1] is Ellipsis:  # tuple[int, ...]: YAML list or CLI "500,500"
            if isinstance(value, str):
                value = [v for v in value.strip("[]").split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_scalar(args[0], v) for v in value)
        if args:  # float | None
            return None if value is None or str(value).lower() in ("none", "null") else _scalar(float, value)
        return _scalar(hint, value)
    except (TypeError, ValueError):
        expected = (f"a list of {'integers' if args[0] is int else 'numbers'}" if args and args[-1] is Ellipsis
                    else "a number or null" if args else _TYPE_NAMES[hint])
        raise ConfigError(f"{name}={value!r} has the wrong type: expected {expected}.") from None


def check_keys(keys, where: str) -> None:
    """Unknown keys are an error naming the nearest valid ones."""
    for k in keys:
        if k not in FIELDS:
            near = difflib.get_close_matches(k, FIELDS, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(near)}?" if near else f" Valid keys: {', '.join(FIELDS)}."
            raise ConfigError(f"unknown key {k!r} in {where}.{hint}")


def from_dict(d: dict, where: str = "config") -> TrialConfig:
    """Build a validated TrialConfig from plain data (YAML, JSON, CLI)."""
    check_keys(d, where)
    return TrialConfig(**{k: _coerce(k, v) for k, v in d.items()})


# ---------------------------------------------------------------- grids

@dataclass
class Grid:
    """An expanded grid: the valid trials plus what was dropped and why."""

    name: str
    trials: list[TrialConfig]
    dropped: list[dict] = field(default_factory=list)


def grid_path(name_or_path: str) -> Path:
    """Resolve a grid NAME in tune_configs/ or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"grid file {p} does not exist.")
        return p.resolve()
    p = GRID_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        names = sorted(q.stem for q in GRID_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown grid {name_or_path!r}: use one of {', '.join(names)} or a path to a .yaml file.")
    return p


def load_grid(name_or_path: str, overrides: dict | None = None) -> Grid:
    """Read a grid YAML ({fixed: {...}, grid: {axis: [values]}}) and expand it.

    The cross product of the axes, each point merged over `fixed` (and `overrides`, e.g. runtime
    options from the CLI); bbb x dropout > 0 is dropped and counted; anything else invalid fails.
    """
    path = grid_path(name_or_path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(spec, dict) or set(spec) - {"fixed", "grid", "description"}:
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ConfigError(f"{path}: top-level keys must be 'description', 'fixed' and 'grid', got {got}.")
    fixed, axes = spec.get("fixed") or {}, spec.get("grid") or {}
    for name, part in (("fixed", fixed), ("grid", axes)):
        if not isinstance(part, dict):
            raise ConfigError(f"{path.name}: '{name}' must be a mapping of TrialConfig keys, got {type(part).__name__}.")
    check_keys(fixed, f"{path.name}: fixed")
    check_keys(axes, f"{path.name}: grid")
    for k, v in axes.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{path.name}: grid axis {k!r} must be a non-empty list of values, got {v!r}.")
    trials, dropped = [], []
    names = list(axes)
    for values in itertools.product(*(axes[k] for k in names)):
        point = {**fixed, **dict(zip(names, values)), **(overrides or {})}
        if point.get("method") == "bbb" and _coerce("dropout", point.get("dropout", 0.0)) > 0:
            dropped.append(point)
            continue
        trials.append(from_dict(point, where=f"{path.name} point {dict(zip(names, values))}"))
    keys = [t.grid_key() for t in trials]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{path.name}: the grid repeats a point (same config twice); remove the duplicate values.")
    return Grid(name=path.stem, trials=trials, dropped=dropped)
