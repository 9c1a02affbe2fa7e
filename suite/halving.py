"""Synchronous successive halving for recipe searches (Jamieson & Talwalkar 2016; the inner loop of
Li et al. 2018's Hyperband): every recipe trains to the first rung (budget.grace_period epochs), the
best max(1, n // 3) of the n recipes at a rung, by the selection metric at that rung's epoch (ties by
grid_key), continue to the next rung (x3 epochs), and the survivors of the last rung train to
max_epochs.

Why synchronous: ASHA decided whenever a recipe reported, against whichever recipes had reported
before it, so how many epochs a recipe got (3, 9 or 15 in three runs of one search) depended on
timing. Here a rung's decision waits until every recipe of the rung has reported, and it is a pure
function of their values at that epoch; training reseeds every epoch, so the same search gives the
same budgets and numbers, and a killed search takes the same decisions again when it resumes (the
values of recipes that ended come from MLflow, the others report theirs from their resume states).
Ray's HyperBandScheduler is synchronous too, but it splits recipes into brackets of different
budgets in arrival order and keeps its decisions in the driver's memory, so a resumed search would
rank only the recipes left. The price: a rung waits for its slowest recipe.
"""
from __future__ import annotations

import math

ETA = 3  # reduction factor: a third of a rung's recipes go on (Li et al.'s default, and ASHA's here before)


def rungs(grace_period: int, max_epochs: int, eta: int = ETA) -> list[int]:
    """The epochs at which recipes are ranked: grace_period x eta^k below max_epochs."""
    out, epoch = [], grace_period
    while epoch < max_epochs:
        out.append(epoch)
        epoch *= eta
    return out


def promoted(values: dict[str, float | None], eta: int = ETA) -> list[str]:
    """The keys that go on past a rung: the best max(1, n // eta) by value (higher is better, a
    missing value is worst), ties by grid key."""
    def rank(key):
        v = values[key]
        missing = v is None or math.isnan(v)
        return missing, 0.0 if missing else -v, key
    return sorted(values, key=rank)[:max(1, len(values) // eta)]


def run_search(setup, job, pending: list, tags: dict[str, str]) -> list:
    """Every rung of `job` (a SearchJob): train the recipes still in that lack the rung's value, up to
    it; rank; stop the others there. Then train the survivors to the end. Recipes that ended in an
    earlier run of the search are ranked by their logged values and not trained again. `tags` go on
    every recipe's run."""
    from . import tracking
    from .sweep import SweepCallback, run_round
    by_key = {t.grid_key(): t for t in job.trials}
    todo = {t.grid_key() for t in pending}
    ended = tracking.metric_histories(setup.client, setup.exp_id, set(by_key) - todo, job.select)
    cb = SweepCallback(setup, pending, job.experiment, tags, job.select)

    def value(key, epoch):
        return (ended.get(key) or cb.values.get(key) or {}).get(epoch)
    alive = sorted(by_key)
    try:
        for rung in rungs(job.grace_period, max(t.epochs for t in job.trials)):
            need = [by_key[k] for k in alive if k in todo and value(k, rung) is None]
            if need:
                print(f"--- rung at epoch {rung}: {len(alive)} recipes, {len(need)} to train up to it")
                run_round(setup, cb, need, until=rung)
            keep = promoted({k: value(k, rung) for k in alive})
            for k in alive:
                if k not in keep and k in cb.rows and cb.rows[k].status == "WAITING":
                    cb.stop(k, rung)
            alive = keep
        last = [by_key[k] for k in alive if k in todo and (k not in cb.rows or cb.rows[k].status == "WAITING")]
        if last:
            print(f"--- last rung: {len(last)} recipe(s) train to the end")
            run_round(setup, cb, last)
    finally:
        cb.close()
    return list(cb.rows.values())
