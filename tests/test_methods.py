"""The plug-in core: grid keys that never churn, a method added in one file, pruning protocols
(fine-tuning holds its mask), training-loop schedules. Golden numbers: test_baseline.py."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suite import prune
from suite.config import TrialConfig, load_grid
from suite.methods import KLParams, build
from suite.train import Phase
from suite.trial import ResumeError, run_trial

DATA = Path(__file__).parent / "data"
PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from suite.methods import Method, Params, register


@dataclass(frozen=True)
class RandSignParams(Params):
    """Random-sign network settings."""

    scale: float = 0.05
    """Magnitude of every weight (signs are random)."""

    def check(self, fail):
        if not self.scale > 0:
            fail("scale", self.scale, "a number > 0")


@register
class RandSign(Method):
    """Weights +-scale with random signs; only the magnitudes' sign pattern is learned (through theta)."""

    name = "randsign"
    Params = RandSignParams
    color, order = "#000000", 50.0

    @classmethod
    def label(cls, cfg):
        return f"RandSign {cfg.params.scale:g}"

    def init_parameters(self):
        self.theta = nn.Parameter(torch.randint(0, 2, (self.n_params,)).float().mul_(2).sub_(1) * self.p.scale)

    def point_weights(self):
        return self.theta

    @torch.no_grad()
    def prune_(self, keep):
        self.theta.mul_(keep)
'''


def test_the_shipped_grids_keep_their_78_released_keys():
    want = json.loads((DATA / "grid_keys_v1.json").read_text())
    got = {g: [t.grid_key() for t in load_grid(g).trials] for g in want}
    assert sum(map(len, want.values())) == 78
    for g, keys in want.items():  # a grid may gain points (scaling gained Sparse VD and L0); none changes its key
        assert set(keys) <= set(got[g]), f"{g}: {sorted(set(keys) - set(got[g]))} changed"


def test_new_fields_enter_the_key_only_when_set():
    base = TrialConfig(method="bbb")
    assert TrialConfig(method="bbb", kl_warmup=[], rho_init=[-5, -4], protocol="oneshot").grid_key() == base.grid_key()
    changed = [TrialConfig(method="bbb", kl_warmup=[1, 3]), TrialConfig(method="bbb", rho_init=[-6, -5]),
               TrialConfig(method="bbb", weight_decay=1e-4), TrialConfig(method="bbb", lr_decay_start=10),
               TrialConfig(method="bbb", protocol="finetune", finetune_epochs=2)]
    assert len({c.grid_key() for c in changed} | {base.grid_key()}) == len(changed) + 1


@pytest.mark.slow
def test_a_method_is_one_file_plus_registration(tmp_path):
    """A user's method file, named in $BPB_PLUGINS, runs through suite.trial with its own setting,
    and its setting is refused for other methods."""
    (tmp_path / "randsign_method.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()]), "BPB_PLUGINS": "randsign_method"}
    args = [sys.executable, "-m", "suite.trial", "--method", "randsign", "--scale", "0.1", "--hidden", "32",
            "--epochs", "1", "--train-subset", "1000", "--val-size", "500", "--lr", "1e-2", "--sparsities", "0,0.5",
            "--json", str(tmp_path / "out.json")]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["config"]["scale"] == 0.1 and "RandSign 0.1 on mnist" in r.stdout
    assert out["metrics"]["sparsity_p50"] == pytest.approx(0.5, abs=1e-3)
    assert out["metrics"]["test_acc_p00"] > 0.3  # it learned something
    bad = subprocess.run([sys.executable, "-m", "suite.trial", "--method", "sgd", "--scale", "0.1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "scale is a setting of method randsign, not of method='sgd'" in bad.stderr


def test_a_registered_method_reaches_the_report(tmp_path, mnist):
    """The same plug-in registered in-process, logged to a real MLflow store, through analysis."""
    from mlflow.tracking import MlflowClient

    from suite import tracking
    from suite.analysis import report
    from suite.analysis.load import load
    from suite.methods import METHODS
    ns: dict = {}
    exec(compile(PLUGIN, "randsign_method.py", "exec"), ns)
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        client = MlflowClient(uri)
        exp_id = client.create_experiment("plugin")
        for method, kw in (("randsign", {"scale": 0.1}), ("sgd", {})):
            cfg = TrialConfig(method=method, hidden=(32,), epochs=1, train_subset=1000, val_size=500, lr=1e-2,
                              sparsities=(0, 0.5), compile=False, **kw)
            tracking.log_result_locally(client, exp_id, run_trial(cfg, arrays=mnist), {"device": "cpu"})
        exp = load("plugin", uri)
        assert set(exp.runs.label) == {"RandSign 0.1", "SGD"}
        md = report.build(exp, tmp_path / "report").read_text()
        assert "RandSign 0.1" in md
    finally:
        METHODS.unregister("randsign")


def tiny(method="sgd", **kw):
    base = dict(method=method, hidden=(64,), epochs=2, train_subset=2000, val_size=1000, lr=1e-3,
                sparsities=(0.0, 0.95), test_samples=2, compile=False)
    return TrialConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("method,level", [("sgd", 0.99), ("bbb", 0.9)])
def test_finetune_holds_the_mask_and_recovers(method, level, mnist):
    torch.set_num_threads(1)
    r = run_trial(tiny(method, protocol="finetune", finetune_epochs=1, sparsities=(0, level)), arrays=mnist)
    m, t = r.metrics, f"p{round(level * 100)}"
    assert m[f"sparsity_{t}"] == pytest.approx(level, abs=1e-4)  # measured on the fine-tuned model's forward
    assert m[f"test_acc_{t}"] > m[f"oneshot_acc_{t}"] + 0.05     # retraining recovers what pruning lost
    assert "oneshot_acc_p00" not in m and f"finetune_val_acc_{t}" in m
    assert m[f"sparsity_l1_{t}"] > level - 0.05 and f"sparsity_l2_{t}" in m


def test_finetune_keeps_pruned_weights_and_adam_moments_at_zero(mnist):
    from suite.data import make_splits
    from suite.protocols import PROTOCOLS
    for method in ("sgd", "bbb"):
        cfg = tiny(method, protocol="finetune", finetune_epochs=2)
        torch.manual_seed(0)
        model = build(cfg)
        keep, _ = prune.keep_mask(prune.scores(model, cfg.resolved_pruner, 0), prune.prunable(model, False), 0.9,
                                  "global", model)
        progress: dict = {}
        data = make_splits(mnist, 1000, 2000, 0, torch.device("cpu"))
        m, _ = PROTOCOLS["finetune"](cfg, model, data, {}).prune_level(0, 0.9, keep, progress)
        for name, _ in m.named_parameters():
            moments = progress["optimizer"]["state"][list(dict(m.named_parameters())).index(name)]
            assert torch.all(moments["exp_avg"][~keep] == 0) and torch.all(moments["exp_avg_sq"][~keep] == 0)
            assert moments["exp_avg"][keep].abs().sum() > 0  # the kept weights did train
        assert torch.all(m.point_weights()[~keep] == 0)
        sample = m.sample()
        if sample is not None:
            assert torch.all(sample[~keep] == 0) and torch.isfinite(m.objective(data.x_train[:50], data.y_train[:50], 1e-3)[0])
        assert prune.measured_sparsity(m, data.x_test[:10], False, sample)[0] == pytest.approx(0.9, abs=1e-4)


@pytest.mark.slow
def test_finetune_resumes_exactly(mnist):
    cfg = tiny("sgd", protocol="finetune", finetune_epochs=2, sparsities=(0.5, 0.9))
    torch.set_num_threads(1)
    full = run_trial(cfg, arrays=mnist)
    saved = {}

    class Stop(Exception):
        pass

    def on_epoch(log, state):
        if log["epoch"] == cfg.epochs + 3:  # mid-way through the second level's fine-tuning
            saved.update(torch.load(_roundtrip(state()), weights_only=True))
            raise Stop
    with pytest.raises(Stop):
        run_trial(cfg, on_epoch, arrays=mnist)
    resumed = run_trial(cfg, arrays=mnist, resume=saved)
    for k, v in full.metrics.items():
        if k.startswith(("test_", "oneshot_", "sparsity_", "finetune_")):
            assert resumed.metrics[k] == v, k
    with pytest.raises(ResumeError, match="resume state of grid point"):
        run_trial(cfg.replace(seed=1), arrays=mnist, resume=saved)


def _roundtrip(state):
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_schedules():
    kl = KLParams(kl_weighting="uniform", kl_warmup=(2, 4))
    assert [kl.kl_scale(e) for e in range(1, 6)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert sum(kl.kl_weights(10, 3)) == pytest.approx(0.5)
    assert sum(dataclasses.replace(kl, kl_weighting="blundell", kl_warmup=()).kl_weights(600, 1)) == pytest.approx(1.0)
    ph = Phase(epochs=10, lr=1.0, decay_start=6)
    assert [ph.lr_at(e) for e in (1, 6, 7, 10)] == [1.0, 1.0, pytest.approx(0.8), pytest.approx(0.2)]
