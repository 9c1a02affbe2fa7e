"""Defaults that train, the grid-key migration of a changed default, and collapse said out loud."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from suite import collapse, tracking
from suite.config import GRID_DIR, TrialConfig, key_defaults, load_grid
from suite.space import load_space
from suite.trial import run_trial, summary

DATA = Path(__file__).parent / "data"

# computed by the code released before Sparse VD's defaults changed (commit 685151d): the key of
# TrialConfig(method="sparse_vd") then (lr 1e-4, no warm-up), and of the paper's recipe spelled out
RELEASED_SVD_OLD_DEFAULT = "f714139d76de14c2"
RELEASED_SVD_PAPER_RECIPE = "163a2235fbd476e4"


def test_sparse_vd_defaults_are_the_papers_recipe():
    c = TrialConfig(method="sparse_vd")
    assert (c.lr, c.kl_warmup, c.kl_weighting) == (1e-3, (5, 20), "uniform")  # Molchanov et al. 2017
    assert TrialConfig(method="sgd").lr == 1e-4 and TrialConfig(method="sparse_vd", lr=3e-4).lr == 3e-4


def test_old_explicit_default_keeps_its_released_key_and_new_default_gets_its_own():
    old = TrialConfig(method="sparse_vd", lr=1e-4, kl_warmup=[])
    new = TrialConfig(method="sparse_vd")
    assert old.grid_key() == RELEASED_SVD_OLD_DEFAULT
    assert new.grid_key() == RELEASED_SVD_PAPER_RECIPE  # same numbers as the recipe spelled out then
    assert new.grid_key() != old.grid_key()
    # each changed default alone changes the key (lr: a V1 field; kl_warmup: through RELEASED_KEY_DEFAULTS)
    assert len({TrialConfig(method="sparse_vd", lr=lr, kl_warmup=w).grid_key()
                for lr in (1e-4, 1e-3) for w in ([], [5, 20])}) == 4


def test_every_later_default_is_hashed_against_its_released_value():
    """A later field enters the key when it differs from its released default: changing a default
    without listing its released value in RELEASED_KEY_DEFAULTS (or, for a protocol's setting,
    RELEASED_PROTOCOL_SETTINGS) would silently move keys."""
    released = json.loads((DATA / "key_defaults_released.json").read_text())
    for method, fields in released.items():
        for protocol in ("oneshot", "finetune", "gradual", "iterative"):
            base = key_defaults(method, protocol)
            assert {k: base[k] for k in fields} == fields, (method, protocol)


def test_no_shipped_grid_or_space_point_changes_its_key():
    """Every key of every shipped grid and search space as released (360 points): still there.
    Grids may gain points; a point that changes its key is a migration, not an edit: one made on
    purpose (a search rerun that picks a new winner for the tuned grid) removes the old keys here
    and says so in the CHANGELOG."""
    released = json.loads((DATA / "grid_keys_shipped.json").read_text())
    for name, keys in released.items():
        kind, stem = name.split(":")
        if kind == "grid":
            now = {t.grid_key() for t in load_grid(stem).trials}
        else:
            space = load_space(stem)
            now = {space.trial(r).grid_key() for r in space.recipes()}
        assert set(keys) <= now, f"{name}: {len(set(keys) - now)} released keys changed"
    assert {p.stem for p in GRID_DIR.glob("*.yaml")} >= {n.split(":")[1] for n in released if n.startswith("grid:")}


def test_collapse_threshold_is_one_and_a_half_times_chance():
    assert collapse.collapsed(0.15) and collapse.collapsed(0.1010) and not collapse.collapsed(0.1501)
    assert collapse.collapsed(0.75, classes=2) and not collapse.collapsed(0.76, classes=2)


def _trial(**kw) -> TrialConfig:
    return TrialConfig(method="sparse_vd", epochs=1, hidden=[300, 100], train_subset=2000, val_size=2000,
                       sparsities=[0.0], compile=False, **kw)


@pytest.mark.slow
def test_a_collapsing_trial_is_flagged_and_tagged_and_a_trained_one_is_not(tmp_path):
    """Sparse VD at the old defaults (lr 1e-4, full KL from the first step) pushes every weight to the
    prior on a small subset: chance accuracy. At its paper's defaults it trains."""
    bad, good = run_trial(_trial(lr=1e-4, kl_warmup=[])), run_trial(_trial())
    assert bad.history[-1]["val_acc"] <= 0.15 < good.history[-1]["val_acc"]
    assert bad.info.get("collapsed") == "true" and "collapsed" not in good.info
    assert "WARNING: collapsed" in summary(bad) and "collapsed" not in summary(good)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("collapse", artifact_location=str(tmp_path / "art"))
    tags = [client.get_run(tracking.log_result_locally(client, exp, r, {})).data.tags for r in (bad, good)]
    assert tags[0].get("collapsed") == "true" and "collapsed" not in tags[1]  # the report marks such runs
