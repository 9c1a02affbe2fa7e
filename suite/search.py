"""`python -m suite.search --space NAME|PATH.yaml`: a Ray Tune recipe search, chosen on validation data.

Draws the space's recipes (seeded random search, suite/grids/search/*.yaml), trains each for up to
budget.max_epochs with the pruned validation accuracy reported every epoch, stops the recipes that
trail by synchronous successive halving (suite/halving.py: the same search takes the same
decisions), and ranks the survivors by the final epoch's selection metric. The test split
never reaches a search trial. MLflow: one parent run per search, one nested run per recipe.
--export-grid writes the winner into a grid (e.g. suite/grids/tuned.yaml) that runs it over 5
seeds and both datasets. Re-running the same command resumes an interrupted search.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import yaml

from .config import ConfigError
from .driver import Runtime, SearchJob, add_runtime_options, check_quick, drive, runtime_from
from .halving import rungs
from .preflight import PreflightError
from .space import EPOCH_FIELDS, Space, load_space

EXPORT_SEEDS = [0, 1, 2, 3, 4]
EXPORT_DATASETS = ["mnist", "fmnist"]


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Runtime]:
    ap = argparse.ArgumentParser(prog="python -m suite.search", description=__doc__.splitlines()[0])
    ap.add_argument("--space", required=True, help="search space NAME in suite/grids/search/ or a .yaml path")
    ap.add_argument("--samples", type=int, default=None, help="recipes to draw (default: the space's budget.samples)")
    ap.add_argument("--max-epochs", type=int, default=None, help="epochs per recipe (default: budget.max_epochs)")
    ap.add_argument("--export-grid", default=None, metavar="PATH",
                    help="write the best recipe into this grid YAML (e.g. suite/grids/tuned.yaml), replacing this "
                         "space's earlier entry; it runs the recipe over 5 seeds on MNIST and Fashion-MNIST")
    add_runtime_options(ap, default_experiment="search-<space>")
    args = ap.parse_args(argv)
    rt = runtime_from(ap, args)
    if args.export_grid and not Path(args.export_grid).resolve().parent.is_dir():  # not after hours of search
        ap.error(f"--export-grid {args.export_grid}: the folder {Path(args.export_grid).resolve().parent} does not exist.")
    return args, rt


def ranking(client, exp_id: str, space: Space) -> list[dict]:
    """The search's recipes that trained all max_epochs, best first by the final epoch's selection
    metric (MLflow's latest value of a per-epoch metric is its last epoch's). Stopped recipes last."""
    from .tracking import runs_by_status
    rows = []
    for r in runs_by_status(client, exp_id, "FINISHED"):
        t = r.data.tags
        if t.get("search") != space.name or "grid_key" not in t:
            continue
        stopped = t.get("stopped_early") == "true"
        rows.append({"run_id": r.info.run_id, "name": r.info.run_name, "stopped": stopped,
                     "epochs": int(r.data.metrics.get("stopped_at_epoch", space.budget.max_epochs)),
                     "value": r.data.metrics.get(space.metric), "params": r.data.params})
    return sorted(rows, key=lambda x: (x["stopped"], -(x["value"] if x["value"] is not None else -1)))


def recipe_of(best: dict, space: Space) -> dict:
    """The winning recipe as grid values: the space's fixed keys and its sampled keys, from the run's
    params, typed by TrialConfig (YAML reads MLflow's "1e-05" as a string, not a float)."""
    values = space.trial({k: yaml.safe_load(best["params"][k]) for k in space.dists}).to_dict()
    return {k: values[k] for k in (*space.fixed, *space.dists) if k != "dataset"}


def export_grid(path: Path, space: Space, best: dict) -> str:
    """Write (or replace) this space's entry in the grid file at `path`; returns the entry's text.
    Each entry is one comment line naming its provenance and one flow-style sub-grid line per variant
    (the winner itself, then each of the space's `variants`), so an entry is replaced by the space
    name in its comment and the other methods' entries stay."""
    recipe = {**recipe_of(best, space), "epochs": space.budget.max_epochs}
    b = space.budget
    comment = (f"# {space.name}: search {space.name} ({b.samples} recipes x {b.max_epochs} epochs, successive halving grace "
               f"{b.grace_period}, seed {b.seed}), selected by {space.metric} on validation = {best['value']:.4f} "
               f"(MLflow run {best['run_id']}), exported {time.strftime('%Y-%m-%d')}")
    lines = []
    for variant in ({}, *space.variants):
        axes = {k: [v] for k, v in (recipe | variant).items()} | {"dataset": EXPORT_DATASETS, "seed": EXPORT_SEEDS}
        lines.append("  - " + yaml.safe_dump(axes, default_flow_style=True, width=10_000, sort_keys=False).strip())
    head = ("description: >\n  The best recipe of each method's search (suite/grids/search/), chosen on validation data only,\n"
            "  run over 5 seeds on MNIST and Fashion-MNIST. Provenance above each entry.\ngrid:\n")
    entries: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines() if path.is_file() else []:
        if m := re.match(r"  # (\S+): search ", line):
            name = m[1]
            entries[name] = [line]
        elif name and line.startswith("  - "):
            entries[name].append(line)
    entries[space.name] = ["  " + comment, *lines]
    path.write_text(head + "".join(f"{line}\n" for e in entries.values() for line in e))
    return "\n".join([comment, *lines])


def recipe_table(space: Space, trials: list, finished: set[str]) -> str:
    keys = list(space.dists)
    lines = [f"{'#':>3} {'grid_key':16} " + " ".join(f"{k:>14}" for k in keys) + " status"]
    for i, t in enumerate(trials):
        vals = t.to_dict()
        lines.append(f"{i:>3} {t.grid_key():16} " + " ".join(f"{str(vals[k]):>14}" for k in keys)
                     + (" finished" if t.grid_key() in finished else " pending"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, rt = parse(argv)
    try:
        check_quick(rt)  # seconds, before drawing the recipes imports torch
        space = load_space(args.space, args.samples, args.max_epochs)
        trials = space.trials(rt.overrides())
        b = space.budget
        print(f"search {space.name}: {len(trials)} distinct recipes of {b.samples} drawn, up to {b.max_epochs} "
              f"epochs each, halving at epochs {rungs(b.grace_period, b.max_epochs)}; selection {space.metric} on "
              f"validation at {list(space.levels)}")
        if b.max_epochs != space.written_for:
            print(f"epoch-valued fields ({', '.join(EPOCH_FIELDS)}) scaled from the space's {space.written_for} epochs "
                  f"to {b.max_epochs}")
        tags = {"search": space.name}
        parent = {**tags, "method": space.method, "select": space.metric, "budget_samples": str(b.samples),
                  "budget_max_epochs": str(b.max_epochs), "budget_grace_period": str(b.grace_period)}
        job = SearchJob(trials, args.experiment or f"search-{space.name}", f"search {space.name}", select=space.metric,
                        grace_period=b.grace_period, tags=tags, parent=parent)
        done = drive(rt, job, lambda finished: recipe_table(space, trials, finished))
    except (ConfigError, PreflightError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if done is None:
        return 0
    from . import tracking
    rows = ranking(done.client, done.exp_id, space)
    print(f"\n{'rank':>4} {space.metric:>13} {'epochs':>6}  recipe")
    for i, r in enumerate(rows):
        v = f"{r['value']:.4f}" if r["value"] is not None else "-"
        print(f"{i + 1:>4} {v:>13} {r['epochs']:>6}  {r['name']}{'  (stopped early)' if r['stopped'] else ''}")
    best = next((r for r in rows if not r["stopped"] and r["value"] is not None), None)
    if best is not None:
        done.client.log_metric(done.parent_id, f"best_{space.metric}", best["value"])
        done.client.set_tag(done.parent_id, "best_run_id", best["run_id"])
        print(f"best recipe ({space.metric} = {best['value']:.4f} on validation): {recipe_of(best, space)}")
        if args.export_grid:
            print(f"wrote {args.export_grid}:\n{export_grid(Path(args.export_grid), space, best)}")
    if done.ok:
        tracking.finish_parent(done.client, done.parent_id)
    print(f"Browse: {done.browse}")
    return 0 if done.ok and best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
