"""Recipe-search spaces (suite/grids/search/*.yaml): distributions over TrialConfig fields, a budget,
and a selection metric on validation data. Validated completely before Ray starts.

    description: ...
    fixed:  {method: bbb, dataset: mnist, hidden: [400, 400]}       # flat TrialConfig keys
    space:                                                           # one distribution per key
      lr: {loguniform: [1.0e-4, 3.0e-3]}
      kl_weighting: {choice: [blundell, uniform]}
      prior_pi: {uniform: [0.25, 0.75]}
    budget: {samples: 40, max_epochs: 30, grace_period: 3, seed: 0}
    select: {metric: val_acc_mean, levels: [0.9, 0.95, 0.98]}      # or val_acc_p95 with levels [0.95]
    variants: [{protocol: finetune, finetune_epochs: 10}]          # optional: also export the winner so changed

Recipes are drawn up front from a seeded generator (random search): the same file always gives the
same recipes, so a search is reproducible, resumable like a grid, and every method searched with
the same budget gets exactly `samples` recipes of `max_epochs` epochs each.

A space is written for its own budget.max_epochs. --max-epochs scales its epoch-valued fields
(EPOCH_FIELDS) by max_epochs / the file's max_epochs, so a shortened search trains the same
schedules in proportion (lr decay over the last half, warm-up over the first third) instead of
failing on a decay start beyond its last epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .config import ConfigError, TrialConfig, check_keys, from_dict, grid_path

SEARCH_DIR = Path(__file__).resolve().parent / "grids" / "search"
DISTRIBUTIONS = ("choice", "uniform", "loguniform")
# TrialConfig fields whose values are epochs of the training run. Scaled rather than written as
# fractions of max_epochs in the space files: the files (and the recipes, hence the grid keys that
# finished searches are stored under) stay exactly as released, at the file's budget nothing is
# touched, and schedules stay readable in the papers' epochs.
EPOCH_FIELDS = ("lr_decay_start", "kl_warmup")


def scale_epochs(values: dict, new: int, old: int) -> dict:
    """`values` with its EPOCH_FIELDS moved from a budget of `old` epochs to one of `new`, rounded
    half up: lr_decay_start k >= 1 stays >= 1 (0 means constant); a warm-up [a, b] keeps b > a."""
    if new == old:
        return values

    def at(epoch):
        return math.floor(epoch * new / old + 0.5)
    out = dict(values)
    if out.get("lr_decay_start"):
        out["lr_decay_start"] = max(1, at(out["lr_decay_start"]))
    if isinstance(out.get("kl_warmup"), (list, tuple)) and len(out["kl_warmup"]) == 2:
        a = at(out["kl_warmup"][0])
        out["kl_warmup"] = [a, max(a + 1, at(out["kl_warmup"][1]))]
    return out


@dataclass(frozen=True)
class Budget:
    """What every method's search gets: the same numbers make the comparison fair."""

    samples: int        # recipes drawn
    max_epochs: int     # epochs of a recipe that is never stopped early
    grace_period: int   # the first rung of successive halving: epochs before a recipe may be stopped
    seed: int           # seed of the recipe draws (not of the trials)


@dataclass
class Space:
    """A parsed, validated search space."""

    name: str
    description: str
    fixed: dict
    dists: dict[str, tuple[str, list]]   # key -> (distribution, its argument list)
    budget: Budget
    metric: str                          # selection metric: val_acc_mean or val_acc_pNN
    levels: tuple[float, ...]            # pruning levels evaluated on validation every epoch
    variants: list[dict]                 # the winner with these fields changed: extra --export-grid entries (not searched)
    written_for: int                     # the file's budget.max_epochs: what its EPOCH_FIELDS values are epochs of

    def recipes(self) -> list[dict]:
        """The `samples` recipes: sampled keys only, in draw order, epoch-valued ones scaled to the
        budget (duplicates of choice-only spaces are kept: they are the same grid point and run once)."""
        rng = np.random.default_rng(self.budget.seed)
        out = []
        for _ in range(self.budget.samples):
            r = {}
            for key, (kind, arg) in self.dists.items():
                if kind == "choice":
                    r[key] = arg[int(rng.integers(len(arg)))]
                else:
                    lo, hi = (math.log(arg[0]), math.log(arg[1])) if kind == "loguniform" else arg
                    v = float(rng.uniform(lo, hi))
                    r[key] = float(f"{math.exp(v) if kind == 'loguniform' else v:.4g}")  # 4 digits: readable recipes
            out.append(scale_epochs(r, self.budget.max_epochs, self.written_for))
        return out

    def trial(self, recipe: dict, overrides: dict | None = None) -> TrialConfig:
        """The TrialConfig of one recipe: fixed keys, the recipe, the budget's epochs, the levels."""
        return from_dict({**self.fixed, **recipe, "epochs": self.budget.max_epochs,
                          "val_sparsities": list(self.levels), **(overrides or {})}, where=f"{self.name} recipe {recipe}")

    def trials(self, overrides: dict | None = None) -> list[TrialConfig]:
        seen, out = set(), []
        for r in self.recipes():
            t = self.trial(r, overrides)
            if t.grid_key() not in seen:
                seen.add(t.grid_key())
                out.append(t)
        return out

    @property
    def method(self) -> str:
        return self.fixed.get("method", "sgd")


def _err(path: Path, msg: str) -> ConfigError:
    return ConfigError(f"{path.name}: {msg}")


def space_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return grid_path(str(p))
    p = SEARCH_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        names = sorted(q.stem for q in SEARCH_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown search space {name_or_path!r}: use one of {', '.join(names)} or a .yaml path.")
    return p


def load_space(name_or_path: str, samples: int | None = None, max_epochs: int | None = None) -> Space:
    """Parse and validate a space file; samples / max_epochs override its budget (CLI)."""
    path = space_path(name_or_path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    allowed = {"description", "fixed", "space", "budget", "select", "variants"}
    if not isinstance(spec, dict) or set(spec) - allowed or not {"space", "budget", "select"} <= set(spec):
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise _err(path, f"top-level keys must be {', '.join(sorted(allowed))} (space, budget, select required), got {got}.")
    fixed, dists = spec.get("fixed") or {}, spec["space"]
    if not isinstance(fixed, dict) or not isinstance(dists, dict) or not dists:
        raise _err(path, "'fixed' must be a mapping and 'space' a non-empty mapping of TrialConfig keys.")
    check_keys(fixed, f"{path.name}: fixed")
    check_keys(dists, f"{path.name}: space")
    for k in ("epochs", "val_sparsities"):
        if k in fixed or k in dists:
            raise _err(path, f"{k!r} is set by the search itself (budget.max_epochs, select.levels); remove it.")
    parsed = {}
    for key, d in dists.items():
        if not isinstance(d, dict) or len(d) != 1 or next(iter(d)) not in DISTRIBUTIONS:
            raise _err(path, f"space.{key} must be one of {{choice: [...]}}, {{uniform: [low, high]}}, "
                             f"{{loguniform: [low, high]}}; got {d!r}.")
        kind, arg = next(iter(d.items()))
        if kind == "choice" and (not isinstance(arg, list) or not arg):
            raise _err(path, f"space.{key}: choice needs a non-empty list of values, got {arg!r}.")
        if kind != "choice":
            if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                                    for a in arg) and arg[0] < arg[1]):
                raise _err(path, f"space.{key}: {kind} needs [low, high] numbers with low < high, got {arg!r}.")
            if kind == "loguniform" and arg[0] <= 0:
                raise _err(path, f"space.{key}: loguniform needs low > 0, got {arg[0]!r}.")
        parsed[key] = (kind, arg)
    b = spec["budget"] if isinstance(spec["budget"], dict) else {}
    if set(b) - {"samples", "max_epochs", "grace_period", "seed"}:
        raise _err(path, f"budget keys are samples, max_epochs, grace_period, seed; got {sorted(b)}.")
    budget = Budget(samples if samples is not None else b.get("samples", 0),
                    max_epochs if max_epochs is not None else b.get("max_epochs", 0),
                    b.get("grace_period", 1), b.get("seed", 0))
    for name in ("samples", "max_epochs", "grace_period"):
        v = getattr(budget, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _err(path, f"budget.{name}={v!r} is invalid: an integer >= 1.")
    if budget.grace_period > budget.max_epochs:
        raise _err(path, f"budget.grace_period={budget.grace_period} exceeds max_epochs={budget.max_epochs}: pass "
                         f"--max-epochs >= {budget.grace_period} or lower budget.grace_period in the space.")
    sel = spec["select"] if isinstance(spec["select"], dict) else {}
    levels = sel.get("levels") or []
    metric = sel.get("metric")
    tags = {f"val_acc_p{round(float(p) * 100):02d}" for p in levels if isinstance(p, (int, float))}
    if not levels or len(tags) != len(levels) or metric not in {"val_acc_mean", *tags}:
        raise _err(path, f"select needs levels (a non-empty list of fractions) and metric val_acc_mean or one of "
                         f"{', '.join(sorted(tags)) or 'val_acc_pNN for a listed level'}; got {sel!r}.")
    variants = spec.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, dict) and v for v in variants):
        raise _err(path, f"variants must be a list of non-empty mappings of TrialConfig keys, got {variants!r}.")
    for v in variants:
        check_keys(v, f"{path.name}: variants")
        if clash := set(v) & {*dists, "epochs", "dataset", "seed"}:
            raise _err(path, f"a variant may not set {sorted(clash)}: searched keys come from the winner, epochs "
                             "from the budget, dataset and seed from the export.")
    written_for = b.get("max_epochs", budget.max_epochs)
    if not isinstance(written_for, int) or isinstance(written_for, bool) or written_for < 1:
        raise _err(path, f"budget.max_epochs={written_for!r} is invalid: an integer >= 1 (the epochs the space is written for).")
    space = Space(path.stem, str(spec.get("description", "")).strip(),
                  scale_epochs(fixed, budget.max_epochs, written_for), parsed, budget, metric,
                  tuple(float(p) for p in levels), [scale_epochs(v, budget.max_epochs, written_for) for v in variants],
                  written_for)
    # every recipe is a valid config (val_size = 0 is refused there: selection never sees the test
    # set), and so is every variant: errors now, not in a worker hours later
    for r in space.recipes():
        space.trial(r)
        for v in space.variants:
            space.trial(r, v)
    return space
