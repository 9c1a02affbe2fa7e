"""Evaluation apart from training, on a real (sqlite) MLflow store: `python -m suite.evaluate`
re-evaluates finished runs from their stored weights and logs to the same runs, and suite.run
re-evaluates a finished grid point of an older evaluation instead of training it again. The
references are the trials' own logged metrics (evaluated at the end of training, an independent
path to each level's model), so equality is the claim."""
import subprocess
import sys

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from test_protocols import tiny
from test_stored import assert_reproduces
from test_sweep import clean_env, cli

from suite import tracking
from suite.evaluate import EVAL_VERSION
from suite.evaluate.__main__ import main
from suite.trial import run_trial, write_artifacts


def logged(client, exp_id, cfg, mnist, fmnist) -> str:
    """A tiny trial logged as a finished run, as by an older evaluation (tag eval_version 1)."""
    r = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    run_id = tracking.log_result_locally(client, exp_id, r, {"device": "cpu"})
    client.set_tag(run_id, "eval_version", "1")
    return run_id, r


def evaluated_again(client, run) -> dict[str, float]:
    """The run's latest metrics that an evaluation logged (step EVAL_VERSION)."""
    return {k: v for k, v in run.data.metrics.items()
            if client.get_metric_history(run.info.run_id, k)[-1].step == EVAL_VERSION}


def levels_of(metrics) -> list[str]:
    return sorted(k.removeprefix("test_acc_") for k in metrics if k.startswith("test_acc_") and "mc" not in k)


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    return uri, client, tracking.ensure_experiment(client, "stored")


def test_a_store_is_evaluated_again_in_place_and_nothing_is_lost(store, mnist, fmnist, capsys):
    """The run gets every level metric again at step EVAL_VERSION (its latest value, equal to the trial's)
    with the trial's own at step 0 kept in the history, and tag eval_version; a second pass has nothing
    to do. A run without weights (as imported from a runs file) is one line and exit status 1."""
    torch.set_num_threads(1)
    uri, client, exp = store
    run_id, r = logged(client, exp, tiny("bbb", sparsities=(0.0, 0.5, 0.9)), mnist, fmnist)
    bare = tracking.start_run(client, exp, r.config, {})
    tracking.finish_run(client, bare, r.metrics, {}, None)
    assert main(["--experiment", "stored", "--tracking-uri", uri]) == 1
    out = capsys.readouterr().out
    assert f"run {bare} " in out and "skipped: no model.pt / config.json artifact" in out
    assert "level  p50 2/3  acc " in out and f"evaluated 1 run(s) again at eval_version {EVAL_VERSION}, skipped 1" in out
    run = client.get_run(run_id)
    assert run.data.tags["eval_version"] == str(EVAL_VERSION)
    assert_reproduces(evaluated_again(client, run), r.metrics, levels_of(r.metrics))
    history = client.get_metric_history(run_id, "test_acc_p50")
    assert [h.step for h in history] == [0, EVAL_VERSION] and history[0].value == history[1].value
    assert [h.step for h in client.get_metric_history(run_id, "total_wall_s")] == [0]  # not re-logged
    assert main(["--experiment", "stored", "--tracking-uri", uri]) == 1  # the bare run again; the other is done
    assert "evaluated 0 run(s) again" in capsys.readouterr().out
    assert main(["--run-id", run_id, "--tracking-uri", uri]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("argv,says", [
    (["--experiment", "nope"], "error: no experiment 'nope' in sqlite:///"),
    (["--run-id", "0123abcd"], "error: no run 0123abcd in sqlite:///"),
])
def test_bad_selection_is_one_clear_error(argv, says, store, capsys):
    uri, client, exp = store
    assert main([*argv, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(says) and len(err.strip().splitlines()) == 1, err


def test_a_run_no_trial_evaluated_is_refused(store, capsys):
    uri, client, exp = store
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id, "FINISHED")
    assert main(["--run-id", run.info.run_id, "--tracking-uri", uri]) == 2
    assert "was not evaluated by a trial (no test_acc_<level> metric" in capsys.readouterr().err


def test_a_missing_store_is_one_clear_error_and_creates_none(tmp_path):
    r = subprocess.run([sys.executable, "-m", "suite.evaluate", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: no MLflow store at sqlite:///"), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("argv,says", [(["--run-id", "a", "--experiment", "b"], "not allowed with argument"),
                                       (["--threads", "0"], "--threads=0 is invalid")])
def test_nonsense_options_are_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err


GRID = {"fixed": {"epochs": 1, "train_subset": 2000, "val_size": 1000, "hidden": [32], "test_samples": 2,
                  "sparsities": [0, 0.9], "compile": False, "lr": 1e-3, "dataset": "mnist", "seed": 0},
        "grid": [{"method": ["sgd"], "protocol": ["oneshot", "finetune", "gradual", "iterative"],
                  "finetune_epochs": [1], "gradual_interval": [5]},
                 {"method": ["sparse_vd"], "protocol": ["natural"]}]}


def histories(client, runs) -> dict:
    return {r.info.run_id: {k: [(h.step, h.value) for h in client.get_metric_history(r.info.run_id, k)]
                            for k in r.data.metrics} for r in runs}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_grid_is_evaluated_again_exactly_and_suite_run_reevaluates_instead_of_training(tmp_path):
    """Every protocol through suite.run; `python -m suite.evaluate --force` reproduces every logged
    non-timing level metric exactly; with eval_version set back to 1, suite.run re-evaluates the runs
    (no new run, no epoch trained, nothing of the history lost, the trials' numbers again) and says
    nothing is left to train;
    the gradual run's retrained level exports."""
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    r = cli(["--grid", str(tmp_path / "grid.yaml"), "--experiment", "g"], tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("g").experiment_id
    runs = client.search_runs([exp])
    assert sorted(x.data.tags["protocol"] for x in runs) == ["finetune", "gradual", "iterative", "natural", "oneshot"]
    assert all(x.data.tags["eval_version"] == str(EVAL_VERSION) for x in runs)
    trial = {x.info.run_id: x.data.metrics for x in runs}
    # the four SGD protocols share one dense net: the one-shot trial (fewest epochs) trains it first, the
    # others start from it (their epochs of training proper are its epochs, logged to each run too)
    assert "dense nets: 4 trials share 1 (0 in the store); 3 trials wait for the 1 trained first" in r.stdout
    trainer = next(x for x in runs if x.data.tags["protocol"] == "oneshot")
    shared = [x for x in runs if x.data.tags["method"] == "sgd" and x is not trainer]
    assert "dense_from" not in trainer.data.tags and all(x.data.tags["dense_from"] == trainer.info.run_id for x in shared)
    val = histories(client, [trainer, *shared])
    assert all(val[x.info.run_id]["val_acc"] == val[trainer.info.run_id]["val_acc"] for x in shared)

    def evaluate(*args):
        return subprocess.run([sys.executable, "-m", "suite.evaluate", "--tracking-uri", uri, *args], cwd=tmp_path,
                              capture_output=True, text=True, env=clean_env(), timeout=600)
    e = evaluate("--force")
    assert e.returncode == 0, e.stdout[-3000:] + e.stderr[-3000:]
    assert e.stdout.count(": evaluating ") == 5 and "level  nat 3/3  acc " in e.stdout
    for x in client.search_runs([exp]):
        assert_reproduces(evaluated_again(client, x), trial[x.info.run_id], levels_of(trial[x.info.run_id]))
    assert "nothing to do" in evaluate().stdout

    for x in runs:
        client.set_tag(x.info.run_id, "eval_version", "1")
    before = histories(client, client.search_runs([exp]))
    again = cli(["--grid", str(tmp_path / "grid.yaml"), "--experiment", "g"], tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "5 already finished (5 of an older evaluation: re-evaluated first), 0 to run" in again.stdout
    assert "nothing to do" in again.stdout and again.stdout.count(": evaluating ") == 5
    after = client.search_runs([exp])
    assert sorted(x.info.run_id for x in after) == sorted(trial)  # no new run
    assert all(x.data.tags["eval_version"] == str(EVAL_VERSION) for x in after)
    now = histories(client, after)
    for run_id, metrics in before.items():  # every point kept; only evaluation points added, no epoch trained
        for k, points in metrics.items():
            assert now[run_id][k][:len(points)] == points, k
            assert all(step == EVAL_VERSION for step, _ in now[run_id][k][len(points):]), k
        assert now[run_id]["val_acc"] == metrics["val_acc"]
    for x in after:  # the driver's own evaluation, in its process, reproduces the trials' numbers too
        assert_reproduces(evaluated_again(client, x), trial[x.info.run_id], levels_of(trial[x.info.run_id]))

    gradual = next(x.info.run_id for x in after if x.data.tags["protocol"] == "gradual")
    x = subprocess.run([sys.executable, "-m", "suite.export", "--run-id", gradual, "--level", "90", "--tracking-uri", uri,
                        "--out", str(tmp_path / "export"), "--format", "safetensors"], cwd=tmp_path, capture_output=True,
                       text=True, env=clean_env(), timeout=300)
    assert x.returncode == 0 and (tmp_path / "export" / "model_p90.safetensors").is_file(), x.stderr[-3000:]


def test_a_damaged_run_is_reported_and_the_others_evaluated(store, mnist, fmnist, tmp_path, capsys):
    """A run whose model.pt cannot be read (cut short) is one line and exit status 1; the pass goes on
    to the next run instead of ending in a traceback."""
    torch.set_num_threads(1)
    uri, client, exp = store
    good, r = logged(client, exp, tiny("sgd", sparsities=(0.0, 0.5)), mnist, fmnist)
    write_artifacts(r, tmp_path / "art")
    (tmp_path / "art" / "model.pt").write_bytes((tmp_path / "art" / "model.pt").read_bytes()[:100])
    damaged = tracking.start_run(client, exp, r.config, {})
    tracking.finish_run(client, damaged, r.metrics, {}, tmp_path / "art")
    client.set_tag(damaged, "eval_version", "1")
    assert main(["--experiment", "stored", "--tracking-uri", uri]) == 1
    out = capsys.readouterr().out
    assert f"run {damaged} " in out and "skipped: " in out.split(f"run {damaged} ")[1].splitlines()[0]
    assert client.get_run(good).data.tags["eval_version"] == str(EVAL_VERSION)
    assert client.get_run(damaged).data.tags["eval_version"] == "1"
