"""TrialConfig: every knob of one trial, validated at the boundary; grid expansion from YAML.

A trial is a pure function of its TrialConfig. Fields marked runtime (device, data_dir) change
where a trial runs, not what it computes, so they are left out of the grid_key.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import inspect
import itertools
import json
import math
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .params import Params
from .registry import METHODS, PROTOCOLS

DATASETS = ("mnist", "fmnist")
OPTIMIZERS = ("adam", "sgd")
PRUNE_SCOPES = ("global", "layer")
PRUNE_STRUCTURES = ("weights", "units")
DEVICES = ("auto", "cpu", "cuda")
RUNTIME_FIELDS = ("compile", "device", "data_dir")
# Chosen so every reasonable method reaches them within 50 epochs (MNIST MLPs plateau near 98 %,
# Fashion-MNIST near 89-90 %); they mark "fitted", not "best".
FIT_TARGETS = {"mnist": 0.97, "fmnist": 0.87}
GRID_DIR = Path(__file__).resolve().parent / "grids"  # package data: works from a wheel too

# The grid-key rule (ARCHITECTURE.md, "Grid keys"). Every key released before methods became plug-ins
# hashed exactly these fields with these defaults; they stay in every key, with the method's value
# where the method has the field and this frozen default where it does not. Any field added later
# enters the key only when its value differs from its own (frozen) default. So adding a field or a
# method never changes an existing key, and changing anything that affects the numbers always does.
V1_KEY_DEFAULTS = {
    "method": "sgd", "dropout": 0.0, "dataset": "mnist", "seed": 0, "epochs": 50, "batch_size": 100,
    "lr": 1e-4, "optimizer": "adam", "hidden": [500, 500], "input_dropout": True, "train_samples": 1,
    "test_samples": 10, "prior_pi": 0.5, "prior_sigma1": 1.0, "prior_sigma2": math.exp(-6),
    "kl_weighting": "blundell", "sparsities": [0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99], "prune_scope": "global",
    "prune_biases": False, "pruner": "auto", "val_size": 10000, "train_subset": 0, "fit_target": None}
# A later field's default, as released, where it has changed since (per method). Changing a default is a
# key migration: the key keeps comparing against the released value, so a config that spells the old
# default out keeps its released key and a config at the new default gets a key of its own. V1 fields need
# no entry (always hashed with their value). tests/test_defaults.py pins every released default.
RELEASED_KEY_DEFAULTS = {
    "sparse_vd": {"kl_warmup": []},  # Molchanov et al.'s warm-up became the default (it collapsed without)
}
# The retraining protocols' settings were common fields, with these defaults, until protocols owned
# their settings: the key still compares against them, and a config written then (which carries all
# of them under every protocol, e.g. a run's config.json) still loads: under a protocol that does not
# own a setting, its released value is accepted and dropped, any other value is an error, as it was.
RELEASED_PROTOCOL_SETTINGS = {"finetune_epochs": 0, "finetune_lr": None, "gradual_epochs": [], "gradual_interval": 100,
                              "iterative_fraction": 0.5, "rewind_epoch": -1}


class ConfigError(ValueError):
    """A config value or grid file is invalid; the message names the field and what is allowed."""


@dataclass(frozen=True, init=False)
class TrialConfig:
    """One grid point: the fields every method shares, plus the method's own settings (`params`) and
    the protocol's (`protocol_params`).

    Built from flat keys, as in YAML and on the command line: TrialConfig(method="bbb", prior_pi=0.25)
    routes prior_pi to BBB's params, TrialConfig(protocol="finetune", finetune_epochs=10) routes
    finetune_epochs to the protocol's; a setting of another method or protocol is an error naming its
    owner. Settings read as attributes too (cfg.prior_pi is cfg.params.prior_pi)."""

    method: str = "sgd"
    """Training method: sgd (deterministic MLP, with dropout if dropout > 0), bbb (Bayes by Backprop), or any registered method."""
    dataset: str = "mnist"
    """Dataset: mnist or fmnist (Fashion-MNIST)."""
    seed: int = 0
    """Seed for initialisation, data split and order, dropout masks and weight samples."""
    epochs: int = 50
    """Training epochs (no early stopping)."""
    batch_size: int = 100
    """Minibatch size."""
    lr: float = 1e-4
    """Learning rate (1e-4 unless the method has its own default: sparse_vd 1e-3, Molchanov et al. 2017)."""
    optimizer: str = "adam"
    """Optimizer: adam or sgd (with momentum if momentum > 0)."""
    momentum: float = 0.0
    """Momentum of optimizer=sgd (Blundell et al. 2015 used SGD with momentum); must be 0 for adam."""
    weight_decay: float = 0.0
    """L2 penalty coefficient added to the gradient (Han et al. 2015 trained with L2 regularisation)."""
    lr_decay_start: int = 0
    """0 = constant learning rate; k >= 1: linear decay from epoch k towards 0 at the end (Molchanov et al. 2017's recipe)."""
    hidden: tuple[int, ...] = (500, 500)
    """Hidden layer widths; the network is 784-hidden...-10."""
    train_samples: int = 1
    """Monte Carlo weight samples per training step (stochastic-weight methods such as BBB; others ignore it)."""
    test_samples: int = 10
    """Weight samples in the Monte Carlo ensemble prediction (test_*_mc metrics) of methods that have one."""
    sparsities: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99)
    """Pruning levels evaluated after training (fraction of prunable weights set to zero)."""
    prune_scope: str = "global"
    """global: one threshold over all layers; layer: the same fraction pruned in every layer."""
    prune_structure: str = "weights"
    """weights: prune single weights; units: whole input units (a pixel or hidden unit and its weights), so a level is a smaller dense net."""
    prune_biases: bool = False
    """Also prune biases (counted in the sparsity denominator)."""
    pruner: str = "auto"
    """Importance score: auto (the method's first score: snr for bbb, magnitude for sgd), a score the method offers, or random."""
    val_sparsities: tuple[float, ...] = ()
    """Levels also pruned and evaluated on the validation split after every epoch (val_acc_pNN; what a recipe search selects on)."""
    protocol: str = "oneshot"
    """oneshot: prune the trained model at each level; finetune: retrain each pruned copy with its mask held; natural: oneshot plus the level the method chooses itself (nat); gradual: retrain while the mask tightens (Zhu & Gupta 2017); iterative: prune and retrain in rounds (Han et al. 2015); or any registered protocol."""
    val_size: int = 10000
    """Validation examples held out of the 60k training set; 0 validates on the test set (as the study did)."""
    train_subset: int = 0
    """Train on only the first N training examples (0 = all); for tests and smoke runs."""
    fit_target: float | None = None
    """Validation accuracy that counts as fitted for epochs_to_fit; None = per-dataset default."""
    compile: bool = True
    """Runtime: fuse stochastic methods' per-weight passes with torch.compile (needs a C++ compiler on CPU); off = eager, same maths. Not part of the grid_key."""
    device: str = "auto"
    """Runtime: auto (cuda if available), cpu or cuda. Not part of the grid_key."""
    data_dir: str = ""
    """Runtime: dataset cache directory ('' = $BPB_DATA_DIR or ~/.cache/bayes-prune-bench). Not part of the grid_key."""
    params: Params = field(default_factory=Params)
    """The method's own settings (its Params dataclass), given as flat keys."""
    protocol_params: Params = field(default_factory=Params)
    """The protocol's own settings (its Params dataclass), given as flat keys."""

    def __init__(self, **flat):
        method, protocol = flat.get("method", "sgd"), flat.get("protocol", "oneshot")
        for name, value, registry in (("method", method, METHODS), ("protocol", protocol, PROTOCOLS)):
            if not isinstance(value, str) or value not in registry:
                _fail(name, value, " | ".join(registry))
        cls, proto = METHODS[method], PROTOCOLS[protocol]
        given = {k: flat.pop(k) for k in ("params", "protocol_params") if k in flat}
        own = {k: flat.pop(k) for k in list(flat) if k in settings(cls)}
        own_protocol = {k: flat.pop(k) for k in list(flat) if k in settings(proto)}
        for k in [k for k in flat if k not in FIELDS]:
            _refuse_setting(k, flat.pop(k), method, protocol)
        own_defaults = cls.field_defaults  # a method's default for a common field (Sparse VD: lr 1e-3)
        for f in dataclasses.fields(self):
            if f.name not in ("params", "protocol_params"):
                v = flat.get(f.name, own_defaults.get(f.name, f.default))
                object.__setattr__(self, f.name, _coerce(f.name, v, _HINTS[f.name]) if f.name in flat else v)
        for part, plugin, flat_own in (("params", cls, own), ("protocol_params", proto, own_protocol)):
            object.__setattr__(self, part, given[part] if part in given and not flat_own else _make(plugin.Params, flat_own))
        validate(self)

    def __getattr__(self, name: str):
        # only reached for names that are not TrialConfig fields: the method's and the protocol's own settings
        for part in ("params", "protocol_params"):
            params = self.__dict__.get(part)
            if params is not None and name in settings(type(params)):
                return getattr(params, name)
        raise AttributeError(f"TrialConfig of method {self.__dict__.get('method')!r} and protocol "
                             f"{self.__dict__.get('protocol')!r} has no setting {name!r}")

    @property
    def method_cls(self):
        return METHODS[self.method]

    @property
    def protocol_cls(self):
        return PROTOCOLS[self.protocol]

    @property
    def resolved_pruner(self) -> str:
        """The importance score actually used (auto = the method's first score)."""
        return self.method_cls.scores[0] if self.pruner == "auto" else self.pruner

    @property
    def resolved_fit_target(self) -> float:
        return FIT_TARGETS[self.dataset] if self.fit_target is None else self.fit_target

    @property
    def total_epochs(self) -> int:
        """Training epochs plus the epochs the protocol trains after them (for progress and ETA)."""
        return self.epochs + self.protocol_cls.extra_epochs(self)

    def to_dict(self) -> dict:
        """Flat plain data: the common fields, the method's and the protocol's settings (YAML / CLI /
        MLflow params)."""
        d = {k: getattr(self, k) for k in FIELDS}
        for part in (self.params, self.protocol_params):
            d.update({f.name: getattr(part, f.name) for f in dataclasses.fields(part)})
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes) -> TrialConfig:
        """A copy with some flat keys changed (validated like any config)."""
        return TrialConfig(**{**self.to_dict(), **changes})

    def grid_key(self) -> str:
        """Stable short hash of everything that determines the trial's numbers (rule: V1_KEY_DEFAULTS,
        RELEASED_KEY_DEFAULTS)."""
        flat = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        d = {k: flat.get(k, v) for k, v in V1_KEY_DEFAULTS.items()}
        base = key_defaults(self.method, self.protocol)
        d.update({k: v for k, v in flat.items() if k not in V1_KEY_DEFAULTS and v != base[k]})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def dense_key(self) -> str | None:
        """The content address of the trial's training proper: the grid key of its one-shot twin at
        level 0 (the same fields less the protocol's own settings and the levels, which act only after
        training), so every protocol of one recipe, seed and dataset shares one dense net (suite/dense.py).
        None where the protocol's training differs from plain training (Protocol.shares_dense)."""
        if not self.protocol_cls.shares_dense(self):
            return None
        own = settings(self.protocol_cls)
        flat = {k: v for k, v in self.to_dict().items() if k not in own}
        return TrialConfig(**{**flat, "protocol": "oneshot", "sparsities": [0.0]}).grid_key()

    def label(self) -> str:
        """Human name of the configuration (SGD, Dropout p, BBB, ...; the protocol's suffix, e.g. '+ fine-tune';
        ' (units)' for structured pruning, so the analysis never pools it with the same arm pruning weights,
        nor compares it with published weight-pruning results, which are matched by label)."""
        units = " (units)" if self.prune_structure == "units" else ""
        return self.method_cls.label(self) + self.protocol_cls.label_suffix + units

    def label_order(self) -> float:
        """Where the label sorts: the method's order, the protocol's offset, a structured arm just after its twin."""
        return self.method_cls.label_order(self) + self.protocol_cls.order_offset + 0.01 * (self.prune_structure == "units")

    def run_name(self) -> str:
        """MLflow run name: label, dataset, seed and the start of the grid_key."""
        return f"{self.label().replace(' ', '')}-{self.dataset}-s{self.seed}-{self.grid_key()[:6]}"

    def run_tags(self) -> dict[str, str]:
        """Identity tags of the trial's MLflow run; suite.analysis reads labels, order, colours and the
        comparison baseline from them (it imports nothing from the training code)."""
        cls, proto = self.method_cls, self.protocol_cls
        color = proto.baseline_color if proto.baseline_color and cls.is_baseline(self) else cls.label_color(self)
        tags = {"grid_key": self.grid_key(), "method": self.method, "dataset": self.dataset,
                "dropout": str(getattr(self.params, "dropout", 0.0)), "seed": str(self.seed), "label": self.label(),
                "protocol": self.protocol, "label_order": f"{self.label_order():g}", "color": color}
        if cls.is_baseline(self) and proto.is_baseline and self.prune_structure == "weights":
            tags["baseline"] = "true"
        if (dense := self.dense_key()) is not None:
            tags["dense_key"] = dense
        return tags


FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig) if f.name not in ("params", "protocol_params")}
_HINTS = {**typing.get_type_hints(TrialConfig)}


def settings(plugin) -> dict[str, dataclasses.Field]:
    """A method's or protocol's own settings (the fields of its Params), or those of a Params class.
    Read from the registered classes at every call, so a plug-in registered late is seen."""
    params = plugin if dataclasses.is_dataclass(plugin) else plugin.Params
    return {f.name: f for f in dataclasses.fields(params)}


def _make(params_cls, flat: dict) -> Params:
    hints = typing.get_type_hints(params_cls)
    return params_cls(**{k: _coerce(k, v, hints[k]) for k, v in flat.items()})


def _owners(key: str) -> tuple[list[str], list[str]]:
    """The methods and the protocols that have a setting of this name."""
    return ([m for m, c in METHODS.items() if key in settings(c)], [p for p, c in PROTOCOLS.items() if key in settings(c)])


def _refuse_setting(key: str, value, method: str, protocol: str) -> None:
    """A flat key that is neither a common field nor a setting of this method or protocol: an error
    naming its owner, except a released protocol setting at its released value (RELEASED_PROTOCOL_SETTINGS)."""
    methods, protocols = _owners(key)
    if methods:
        raise ConfigError(f"{key} is a setting of method {' / '.join(methods)}, not of method={method!r}: "
                          f"remove it or use --method {methods[0]}.")
    if key in RELEASED_PROTOCOL_SETTINGS and protocols:
        released = RELEASED_PROTOCOL_SETTINGS[key]
        v = _coerce(key, value, typing.get_type_hints(PROTOCOLS[protocols[0]].Params)[key])
        if (list(v) if isinstance(v, tuple) else v) != released:  # a setting the protocol would silently ignore
            _fail(key, v, f"{_show(released)} with protocol={protocol} "
                          f"(only {' | '.join(protocols)} use{'s' if len(protocols) == 1 else ''} it)")
        return
    if protocols:
        raise ConfigError(f"{key} is a setting of protocol {' / '.join(protocols)}, not of protocol={protocol!r}: "
                          f"remove it or use --protocol {protocols[0]}.")
    check_keys([key], "config")


def key_defaults(method: str, protocol: str = "oneshot") -> dict:
    """The value of every flat field that leaves it out of the grid key (ARCHITECTURE.md, "Grid
    keys"): the default as released, as plain data."""
    cls = METHODS[method]
    wrong = sorted(set(cls.field_defaults) - set(FIELDS) | set(cls.field_defaults) & set(RUNTIME_FIELDS))
    if wrong:
        raise ConfigError(f"method {cls.name}: field_defaults {wrong} are not common, non-runtime TrialConfig fields.")
    d = {f.name: f.default for f in FIELDS.values()}
    for plugin in (PROTOCOLS[protocol], cls):
        d.update({k: f.default for k, f in settings(plugin).items()})
    d.update(cls.field_defaults, **RELEASED_PROTOCOL_SETTINGS, **RELEASED_KEY_DEFAULTS.get(method, {}))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def field_docs(cls=None) -> dict[str, str]:
    """The one-line docstring under each field of a dataclass (default: TrialConfig and every
    registered method's and protocol's Params), for --help and the README."""
    if cls is None:
        out = field_docs(TrialConfig)
        for plugin in (*METHODS.values(), *PROTOCOLS.values()):
            out.update({k: v for k, v in field_docs(plugin.Params).items() if k not in out})
        return out
    out = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        out.update({a.target.id: b.value.value for a, b in zip(body, body[1:])
                    if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)})
    return out


def _fail(name: str, value, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"{name}={value!r} is invalid: allowed {allowed}.")


def validate(c: TrialConfig) -> None:
    """Range and choice checks; types were coerced already. Raises ConfigError naming the field."""
    cls = c.method_cls
    choices = {"dataset": DATASETS, "optimizer": OPTIMIZERS, "prune_scope": PRUNE_SCOPES, "prune_structure": PRUNE_STRUCTURES, "protocol": PROTOCOLS,
               "device": DEVICES, "pruner": ("auto", *cls.scores, "random")}
    for name, allowed in choices.items():
        if getattr(c, name) not in allowed:
            _fail(name, getattr(c, name), " | ".join(allowed) + (f" for method={c.method}" if name == "pruner" else ""))
    c.params.check(_fail)
    c.protocol_params.check(_fail)
    cls.check(c, _fail)
    positive = ("epochs", "batch_size", "train_samples", "test_samples")
    for name in positive:
        if getattr(c, name) < 1:
            _fail(name, getattr(c, name), "an integer >= 1")
    if not c.hidden or any(h < 1 for h in c.hidden):
        _fail("hidden", list(c.hidden), "a non-empty list of positive widths, e.g. [500, 500]")
    if not c.lr > 0:
        _fail("lr", c.lr, "a number > 0")
    if not 0 <= c.momentum < 1 or (c.momentum > 0 and c.optimizer != "sgd"):
        _fail("momentum", c.momentum, "a number in [0, 1), and 0 unless optimizer=sgd")
    if not c.weight_decay >= 0:
        _fail("weight_decay", c.weight_decay, "a number >= 0")
    if not 0 <= c.lr_decay_start <= c.epochs:
        _fail("lr_decay_start", c.lr_decay_start, f"0 (constant) or an epoch in 1..epochs={c.epochs}")
    c.protocol_cls.check(c, _fail)
    if not 0 <= c.seed < 2 ** 31:
        _fail("seed", c.seed, "an integer in [0, 2^31)")
    if not c.sparsities or any(not 0.0 <= p <= 1.0 for p in c.sparsities):
        _fail("sparsities", list(c.sparsities), "a non-empty list of fractions in [0, 1]")
    if any(not 0.0 <= p <= 1.0 for p in c.val_sparsities) or len({round(p * 100) for p in c.val_sparsities}) != len(c.val_sparsities):
        _fail("val_sparsities", list(c.val_sparsities), "distinct fractions in [0, 1] at whole-percent resolution")
    if c.val_sparsities and c.val_size == 0:
        _fail("val_sparsities", list(c.val_sparsities), "[] with val_size=0 (the validation split would be the test set)")
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


def _coerce(name: str, value, hint=None):
    """Coerce a YAML/CLI value to the field's type, or fail naming the field and the expected type."""
    hint = hint or _HINTS[name]
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


def all_keys() -> list[str]:
    """Every flat key a config may hold: the common fields, then every registered method's and
    protocol's settings."""
    own = [k for plugin in (*METHODS.values(), *PROTOCOLS.values()) for k in settings(plugin)]
    return [*FIELDS, *sorted(set(own) - set(FIELDS))]


def check_keys(keys, where: str) -> None:
    """Unknown keys are an error naming the nearest valid ones."""
    valid = all_keys()
    for k in keys:
        if k not in valid:
            near = difflib.get_close_matches(k, valid, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(near)}?" if near else f" Valid keys: {', '.join(valid)}."
            raise ConfigError(f"unknown key {k!r} in {where}.{hint}")


def from_dict(d: dict, where: str = "config") -> TrialConfig:
    """Build a validated TrialConfig from flat plain data (YAML, JSON, CLI)."""
    check_keys(d, where)
    return TrialConfig(**d)


# ---------------------------------------------------------------- grids

@dataclass
class Grid:
    """An expanded grid: the valid trials plus what was dropped and why."""

    name: str
    trials: list[TrialConfig]
    dropped: list[dict] = field(default_factory=list)   # each point, with a "reason"


def grid_path(name_or_path: str) -> Path:
    """Resolve a grid NAME in suite/grids/ or a path to a YAML file."""
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


def _expand(where: str, fixed: dict, axes: dict, overrides: dict) -> tuple[list[TrialConfig], list[dict]]:
    """The cross product of one mapping of axes, each point merged over `fixed` and `overrides`.

    Grids span methods, so a setting applies only to the methods that have it: a `fixed` one is
    simply not given to the others, and along an axis of a setting a method lacks, that method keeps
    the axis's first value and the rest are dropped as repeats (e.g. bbb x dropout > 0)."""
    trials, dropped = [], []
    names = list(axes)
    for values in itertools.product(*(axes[k] for k in names)):
        chosen = dict(zip(names, values))
        point = {**fixed, **chosen, **overrides}
        method, protocol = point.get("method", "sgd"), point.get("protocol", "oneshot")
        if method not in METHODS or protocol not in PROTOCOLS:
            from_dict(point, where)  # raises the error naming the registered methods or protocols
        own = {*FIELDS, *settings(METHODS[method]), *settings(PROTOCOLS[protocol])}
        foreign = [k for k in names if k not in own and chosen[k] != axes[k][0]]
        if foreign:
            dropped.append({**chosen, "reason": f"{foreign[0]} does not apply to method {method}"})
            continue
        trials.append(from_dict({k: v for k, v in point.items() if k in own}, where=f"{where} point {chosen}"))
    return trials, dropped


def load_grid(name_or_path: str, overrides: dict | None = None) -> Grid:
    """Read a grid YAML and expand it: {description, fixed: {key: value}, grid: {axis: [values]}}.

    `grid` may also be a list of such mappings (a union of cross products, e.g. one per method with
    its own epoch budget); `fixed` applies to all of them. See _expand for how settings of one
    method are handled in a grid that spans several."""
    path = grid_path(name_or_path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(spec, dict) or set(spec) - {"fixed", "grid", "description"}:
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ConfigError(f"{path}: top-level keys must be 'description', 'fixed' and 'grid', got {got}.")
    fixed, subgrids = spec.get("fixed") or {}, spec.get("grid") or {}
    subgrids = subgrids if isinstance(subgrids, list) else [subgrids]
    for name, part in (("fixed", fixed), *(("grid", g) for g in subgrids)):
        if not isinstance(part, dict):
            raise ConfigError(f"{path.name}: '{name}' must be a mapping of TrialConfig keys (or, for 'grid', a list "
                              f"of such mappings), got {type(part).__name__}.")
    check_keys(fixed, f"{path.name}: fixed")
    trials, dropped = [], []
    for axes in subgrids:
        check_keys(axes, f"{path.name}: grid")
        for k, v in axes.items():
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{path.name}: grid axis {k!r} must be a non-empty list of values, got {v!r}.")
            if k not in FIELDS:  # a setting: type-check every value, also where a method or protocol skips it
                methods, protocols = _owners(k)
                owner = METHODS[methods[0]] if methods else PROTOCOLS[protocols[0]]
                for value in v:
                    _coerce(k, value, typing.get_type_hints(owner.Params)[k])
        t, d = _expand(path.name, fixed, axes, overrides or {})
        trials += t
        dropped += d
    used = [METHODS[m] for m in sorted({t.method for t in trials})] + [PROTOCOLS[p] for p in sorted({t.protocol for t in trials})]
    for k in fixed:
        if k not in FIELDS and not any(k in settings(c) for c in used):
            raise ConfigError(f"{path.name}: fixed key {k!r} applies to none of the grid's methods and protocols "
                              f"({', '.join(c.name for c in used)}); remove it or add its method or protocol.")
    keys = [t.grid_key() for t in trials]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{path.name}: the grid repeats a point (same config twice); remove the duplicate values.")
    return Grid(name=path.stem, trials=trials, dropped=dropped)


def field_table() -> str:
    """The README's field table (markdown), generated from the docstrings: common fields, each
    method's own settings, then the protocols' settings (once each, with every protocol that has it).
    `python -m suite.config` prints it; a test keeps docs/fields.md in sync."""
    docs = field_docs(TrialConfig)
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{k}` | `{_show(FIELDS[k].default)}` | {docs[k]} |" for k in FIELDS]
    for name, cls in METHODS.items():
        own = {f.name: f.default for f in dataclasses.fields(cls.Params)}
        if own:
            pdocs = field_docs(cls.Params)
            rows += [f"| `{k}` ({name}) | `{_show(v)}` | {pdocs[k]} |" for k, v in own.items()]
        rows += [f"| `{k}` ({name}) | `{_show(v)}` | {name}'s own default of the common field `{k}`. |"
                 for k, v in cls.field_defaults.items()]
    for k in dict.fromkeys(k for c in PROTOCOLS.values() for k in settings(c)):
        protocols = _owners(k)[1]
        params = PROTOCOLS[protocols[0]].Params
        rows.append(f"| `{k}` ({', '.join(protocols)}) | `{_show(settings(params)[k].default)}` | {field_docs(params)[k]} |")
    return "\n".join(rows)


def _show(v) -> str:
    return json.dumps(list(v) if isinstance(v, tuple) else v) if not isinstance(v, float) else f"{v:g}"


if __name__ == "__main__":
    print(field_table())
