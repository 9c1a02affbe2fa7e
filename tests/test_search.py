"""Recipe search: space validation before Ray, reproducible draws, a tiny search end to end with
resume, validation-only selection, nested MLflow runs and the exported grid."""
import re

import pytest

from suite.config import ConfigError
from suite.space import SEARCH_DIR, load_space

GOOD = """
fixed: {method: bbb, hidden: [16], train_subset: 600, val_size: 300, compile: false, sparsities: [0, 0.9]}
space:
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  kl_weighting: {choice: [blundell, uniform]}
  prior_pi: {uniform: [0.25, 0.75]}
budget: {samples: 3, max_epochs: 2, grace_period: 1, seed: 0}
select: {metric: val_acc_mean, levels: [0.5, 0.9]}
"""


def write(tmp_path, text):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return str(p)


def test_draws_are_reproducible_and_inside_the_space(tmp_path):
    s = load_space(write(tmp_path, GOOD))
    a, b = s.recipes(), load_space(write(tmp_path, GOOD)).recipes()
    assert a == b and len(a) == 3
    assert all(1e-3 <= r["lr"] <= 1e-2 and 0.25 <= r["prior_pi"] <= 0.75 for r in a)
    t = s.trials()[0]
    assert t.epochs == 2 and t.val_sparsities == (0.5, 0.9) and t.method == "bbb"


@pytest.mark.parametrize("change,needle", [
    (("lr: {loguniform: [1.0e-3, 1.0e-2]}", "lrr: {loguniform: [1.0e-3, 1.0e-2]}"), "unknown key 'lrr'.*Did you mean lr"),
    (("{choice: [blundell, uniform]}", "{choice: []}"), "kl_weighting: choice needs a non-empty list"),
    (("[1.0e-3, 1.0e-2]", "[0, 1.0e-2]"), "lr: loguniform needs low > 0"),
    (("[0.25, 0.75]", "[0.75, 0.25]"), "prior_pi: uniform needs \\[low, high\\] numbers with low < high"),
    (("samples: 3", "samples: 0"), "budget.samples=0 is invalid"),
    (("max_epochs: 2", "max_epochs: 0"), "budget.max_epochs=0 is invalid"),
    (("grace_period: 1", "grace_period: 5"), "grace_period=5 exceeds max_epochs=2"),
    (("metric: val_acc_mean", "metric: test_acc_p90"), "select needs levels"),
    (("val_size: 300", "val_size: 0"), "with val_size=0 \\(the validation split would be the test set\\)"),
    (("prior_pi: {uniform", "dropout: {uniform"), "dropout is a setting of method sgd"),
    (("lr: {loguniform", "lr: {normal"), "space.lr must be one of"),
    (("select:", "variants: [{lr: 0.1}]\nselect:"), "a variant may not set \\['lr'\\]"),
    (("select:", "variants: [{protocol: finetune}]\nselect:"), "finetune_epochs.*>= 1 with protocol=finetune"),
    (("select:", "variants: {protocol: finetune}\nselect:"), "variants must be a list"),
])
def test_bad_spaces_fail_before_ray(tmp_path, change, needle):
    with pytest.raises(ConfigError, match=needle):
        load_space(write(tmp_path, GOOD.replace(*change)))


@pytest.mark.slow  # a CLI subprocess
def test_export_to_a_missing_folder_fails_before_ray(tmp_path):
    r = cli(["--space", "bbb", "--export-grid", str(tmp_path / "no" / "tuned.yaml")], tmp_path, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and not (tmp_path / "mlflow.db").exists()


def test_shipped_spaces_share_one_budget_and_metric():
    names = sorted(p.stem for p in SEARCH_DIR.glob("*.yaml"))
    spaces = [load_space(n) for n in names]
    assert len({(s.budget, s.metric, s.levels) for s in spaces}) == 1
    assert {s.method for s in spaces} == {"sgd", "bbb", "sparse_vd", "l0"}


def test_export_keeps_other_spaces_and_replaces_its_own_entry(tmp_path):
    """Each space owns one entry (a provenance comment, then the winner and its variants); exporting a
    space again replaces exactly that entry."""
    from suite.config import load_grid
    from suite.search import export_grid
    ft = GOOD.replace("select:", "variants: [{protocol: finetune, finetune_epochs: 1}]\nselect:")
    a = load_space(write(tmp_path, ft))
    other = tmp_path / "sgd.yaml"
    other.write_text("fixed: {method: sgd, hidden: [16], val_size: 300, sparsities: [0, 0.9]}\n"
                     "space: {lr: {loguniform: [1.0e-3, 1.0e-2]}}\n"
                     "budget: {samples: 2, max_epochs: 2, grace_period: 1}\nselect: {metric: val_acc_p90, levels: [0.9]}\n")
    b = load_space(str(other))
    out = tmp_path / "tuned.yaml"

    def best(space, lr):
        params = {k: str(v) for k, v in {**space.fixed, **space.recipes()[0], "lr": lr}.items()}
        return {"run_id": f"run-{lr}", "value": 0.9, "params": params}
    export_grid(out, a, best(a, 0.002))
    export_grid(out, b, best(b, 0.003))
    export_grid(out, a, best(a, 1e-05))          # the space's second export replaces its first
    text = out.read_text()
    assert text.count("# space: search space") == 1 and "run-0.002" not in text and "run-1e-05" in text
    assert "lr: [1.0e-05]" in text                 # a float in YAML, not the string MLflow stored
    trials = load_grid(str(out)).trials
    assert sorted((t.method, t.protocol, t.lr) for t in trials if t.seed == 0 and t.dataset == "mnist") == [
        ("bbb", "finetune", 1e-05), ("bbb", "oneshot", 1e-05), ("sgd", "oneshot", 0.003)]
    assert len(trials) == 3 * 5 * 2


def cli(args, cwd, timeout=900):
    import os
    import subprocess
    import sys
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "suite.search", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


TINY = GOOD.replace("samples: 3, max_epochs: 2", "samples: 4, max_epochs: 3").replace(
    "train_subset: 600", "train_subset: 600, test_samples: 2").replace(
    "select:", "variants: [{protocol: finetune, finetune_epochs: 1}]\nselect:")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tiny_search_end_to_end_with_resume_nested_runs_and_export(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml
    from mlflow.tracking import MlflowClient

    from suite.config import load_grid
    space = write(tmp_path, TINY)
    # first attempt: killed (SIGKILL, no cleanup) once the first recipe has logged an epoch
    env_args = [sys.executable, "-m", "suite.search", "--space", space, "--cpus-per-trial", "1"]
    proc = subprocess.Popen(env_args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, start_new_session=True)
    deadline = time.time() + 600
    for line in proc.stdout:
        if "epoch 1/3" in line or time.time() > deadline:
            break
    # the driver and everything it started (its local Ray), never `ray stop`: that would kill every
    # Ray instance on the machine, other users' sweeps included
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = cli(["--space", space, "--export-grid", str(tmp_path / "tuned.yaml")], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "best recipe (val_acc_mean" in r.stdout
    assert re.search(r"epoch \d/3 val_acc 0\.\d+ val_acc_mean 0\.\d+", r.stdout)  # progress shows what ASHA ranks by
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("search-space")
    runs = c.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("search_parent") == "true"]
    children = [x for x in runs if "grid_key" in x.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # one run per recipe: the killed attempt's run is KILLED, its recipe resumed into a new FINISHED run
    finished = [x for x in children if x.info.status == "FINISHED"]
    assert len({x.data.tags["grid_key"] for x in finished}) == len(finished) == 4
    assert all(x.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for x in children)
    for x in finished:  # selection data from validation only: no test metric anywhere in the search
        assert not any(k.startswith(("test_", "oneshot_", "latency_")) for k in x.data.metrics)
        assert "val_acc_mean" in x.data.metrics and "val_acc_p90" in x.data.metrics
    best = parents[0].data.tags["best_run_id"]
    ranked = sorted((x for x in finished if x.data.tags.get("stopped_early") != "true"),
                    key=lambda x: -x.data.metrics["val_acc_mean"])
    assert best == ranked[0].info.run_id
    # the exported grid runs the winner (and its fine-tuned variant) over 5 seeds and both datasets,
    # with its provenance
    text = (tmp_path / "tuned.yaml").read_text()
    assert "# space: search space (4 recipes x 3 epochs" in text and best in text
    g = load_grid(str(tmp_path / "tuned.yaml"))
    assert len(g.trials) == 20 and {t.seed for t in g.trials} == {0, 1, 2, 3, 4}
    assert {t.protocol for t in g.trials} == {"oneshot", "finetune"}
    won = yaml.safe_load(c.get_run(best).data.params["lr"])
    assert all(t.lr == won and t.method == "bbb" and t.epochs == 3 for t in g.trials)
