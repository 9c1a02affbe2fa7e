"""The driver's pieces on their own (no Ray): the runtime spec built from CLI options, a job's pending
grid points, a dry run that creates nothing, the lock; and search spaces under a changed budget."""
import argparse
import dataclasses

import pytest

from suite import run, search
from suite.config import ConfigError, from_dict
from suite.driver import Job, Runtime, ScalingJob, SearchJob, add_runtime_options, drive, runtime_from
from suite.space import SEARCH_DIR, load_space

# The grid keys of the 40 recipes of the shipped bbb and sgd spaces at their own budget (30 epochs),
# from `python -m suite.search --space bbb|sgd --dry-run` as released: finished searches in users'
# stores are keyed by them, so they must never change.
RELEASED_KEYS = {
    "bbb": """b65e8066b6256cb0 f8b8a7ea23442118 989d2510eae913f6 dc9cf62831acb906 fedc5f97c5b1a673 beb2d7ff759ffe31
        9b52449238590722 86f2728c3c0474f6 07f0a8ae46d8e984 635c85909a76c0f9 e541f9d42dc97cb2 1c42872d3f0d970e
        5acefc957205cc9d 1e94369ed30b0903 0dcd114c9b2596b8 ed50372bee4d3ad9 d8be86532a49871e f8f8bba8d8645705
        f630a317847d124d 0169b21d811e2e26 c2649353d40d177b 76a5ca9971d308a4 77ed236af8da9cb4 3757537022b2137f
        19827c28989fa7ad 60d230d10f9136e2 10f60f88b8be8333 92336b65e8274d9f e4793ab94a2535f8 56e7bbe5e8ed7858
        f144f74f20b77ab1 909e269ffdf2f59e a10e0c3690ed2316 5c2953cc404ccefb d1e2edea1430e3da c3be69b12427835e
        2ef5374d6dffd0d7 f65f8c4ecf6b9c06 44a83a47a488efca 8d83737702ff81aa""".split(),
    "sgd": """723268524c0a8733 666d58e91ff7ebf6 cc59c6cca341f720 a33158fc2235506e ff683c4476e0c81d e8bdf48b2b30c770
        136f333be51e96da 01ec8a57f55f6ffa 69f0a8626ad8fd0c c162760c7dde402c c6fc6d85897c03ed 8ff7f54e46fba16b
        d9249eb2089b8855 8de567c07f57746e b7abd6a13c2d771e a458c4935bcd6031 180c701277cae706 aeb979ce7d3f2e16
        7b005032926835c5 3edf07d5043e51a2 cebdf5254a95a8d2 4d0b59b7f8981f34 100aba62b5dd906a abc0174873e5baaf
        59e9eddf0f553b22 a304ec76b6067e8e 2d62f1dab0d5f6c8 f47cac3254f52690 acbd2aee7f8e8513 070dc1c8f29fb09f
        12692b58665b5dfa 1056a868d89eae7f b7ab3e542b032b68 198878a3b615cf1f a08e2656675d38bf 8ea0824ad20e96e7
        ab22d295e9a3556e 69141a561c9d0d05 6e65aaac9ee439a7 843287a1fb08bb10""".split(),
}
SHIPPED = sorted(p.stem for p in SEARCH_DIR.glob("*.yaml"))


def parse_runtime(argv):
    ap = argparse.ArgumentParser()
    add_runtime_options(ap, default_experiment="x")
    return runtime_from(ap, ap.parse_args(argv))


def test_runtime_is_built_from_the_cli_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rt = parse_runtime([])
    assert rt == Runtime(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}", storage=tmp_path.resolve() / "ray_results")
    assert rt.overrides() == {}
    rt = parse_runtime(["--tracking-uri", "http://h:5000", "--address", "auto", "--cpus-per-trial", "2",
                        "--gpus-per-trial", "0.5", "--max-concurrent", "3", "--device", "cpu", "--data-dir", "d",
                        "--storage-path", "s", "--dry-run"])
    assert (rt.tracking_uri, rt.address, rt.cpus_per_trial, rt.gpus_per_trial, rt.max_concurrent, rt.dry_run) == (
        "http://h:5000", "auto", 2.0, 0.5, 3, True)
    assert rt.storage == tmp_path.resolve() / "s"
    # absolute: Ray moves trials' working directories
    assert rt.overrides() == {"device": "cpu", "data_dir": str(tmp_path.resolve() / "d")}
    with pytest.raises(dataclasses.FrozenInstanceError):  # frozen: built once, the same for every step
        rt.dry_run = False


@pytest.mark.parametrize("argv, says", [
    (["--cpus-per-trial", "0.5"], "--cpus-per-trial=0.5 is invalid: use a number >= 1."),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial=-1.0 is invalid: use a number >= 0 (fractions share a GPU)."),
    (["--max-concurrent", "0"], "--max-concurrent=0 is invalid: use an integer >= 1."),
])
def test_nonsense_runtime_options_are_one_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        parse_runtime(argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert e.value.code == 2 and len(errors) == 1 and errors[0].endswith(says)
    with pytest.raises(ConfigError, match="--device=gpu is invalid: use one of auto, cpu, cuda"):
        Runtime("sqlite:///m.db", storage=".", device="gpu")  # built in code, checked the same way


def trials(*seeds, method="sgd"):
    return [from_dict({"method": method, "seed": s, "epochs": 2, "lr": 1e-3 * (i + 1)}) for i, s in enumerate(seeds)]


def test_pending_is_the_unfinished_grid_points_seed_major():
    ts = trials(2, 0, 1, 0, 2)
    job = Job(ts, "e", "grid g")
    # by hand: seeds 0, 0, 1, 2, 2, each seed's points in grid order
    assert job.pending(set()) == [ts[1], ts[3], ts[2], ts[0], ts[4]]
    finished = {ts[1].grid_key(), ts[4].grid_key()}
    assert job.pending(finished) == [ts[3], ts[2], ts[0]]
    # --rerun trains everything again; a concurrency sweep times the whole grid at every level
    assert Job(ts, "e", "g", rerun=True).pending(finished) == [ts[1], ts[3], ts[2], ts[0], ts[4]]
    assert len(ScalingJob(ts, "e", "g", levels=[1, 2]).pending(finished)) == 5


SEARCH = {"select": "val_acc_mean", "grace_period": 1, "tags": {}, "parent": {}}


@pytest.mark.parametrize("kind, kwargs, says", [
    (ScalingJob, {"levels": [1, 0]}, "--concurrency='1,0' is invalid"),
    (ScalingJob, {"levels": []}, "--concurrency='' is invalid"),
    (SearchJob, {**SEARCH, "grace_period": 0}, "grace_period=0 is invalid"),
    (Job, {"experiment": ""}, "pass --experiment NAME"),
    (SearchJob, {**SEARCH, "experiment": ""}, "pass --experiment NAME"),
])
def test_a_nonsense_job_is_one_clear_error(kind, kwargs, says):
    with pytest.raises(ConfigError, match=says):
        kind(**{"trials": trials(0), "experiment": "e", "title": "t", **kwargs})


def test_dry_run_prints_the_table_and_creates_nothing(tmp_path, capsys):
    rt = Runtime(f"sqlite:///{tmp_path / 'mlflow.db'}", storage=tmp_path / "ray_results", dry_run=True)
    ts = trials(0, 1)
    seen = []

    def table(finished):
        seen.append(finished)
        return "THE TABLE"
    assert drive(rt, Job(ts, "e", "t"), table) is None
    assert capsys.readouterr().out == "THE TABLE\n" and seen == [set()]
    assert list(tmp_path.iterdir()) == []  # no store, no lock, no Ray folder


def test_a_run_left_running_beside_finished_grid_points_is_reaped_when_nothing_is_left_to_do(tmp_path, capsys):
    """A dead driver can leave a RUNNING run of a grid point that also has a FINISHED one (a create
    the tracking server committed but never answered, retried): the next drive, with nothing to
    train, marks it KILLED rather than leave it looking alive."""
    from suite import tracking
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ts = trials(0)
    client = tracking.connect(uri)
    exp_id = tracking.ensure_experiment(client, "e")
    client.set_terminated(tracking.start_run(client, exp_id, ts[0], {}), "FINISHED")
    stray = tracking.start_run(client, exp_id, ts[0], {})
    assert drive(Runtime(uri, storage=tmp_path / "ray_results"), Job(ts, "e", "t"), lambda f: "") is None
    assert client.get_run(stray).info.status == "KILLED"
    assert "marked 1 run(s) left RUNNING" in capsys.readouterr().out


def test_dry_run_marks_what_the_store_holds_as_finished(tmp_path, capsys):
    from suite import tracking
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ts = trials(0, 1)
    client = tracking.connect(uri)
    exp_id = tracking.ensure_experiment(client, "e")
    client.set_terminated(tracking.start_run(client, exp_id, ts[1], {}), "FINISHED")
    client.set_terminated(tracking.start_run(client, exp_id, ts[0], {}), "KILLED")  # not finished: trained again
    seen = []
    drive(Runtime(uri, storage=tmp_path / "ray_results", dry_run=True), Job(ts, "e", "t"), lambda f: seen.append(f) or "")
    assert seen == [{ts[1].grid_key()}]
    assert not (tmp_path / "ray_results").exists()


def test_the_grid_cli_builds_its_job_from_the_options(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(run, "drive", lambda rt, job, table: seen.update(rt=rt, job=job))
    assert run.main(["--grid", "smoke", "--concurrency", "1,2", "--device", "cpu", "--storage-path", str(tmp_path)]) == 0
    job, rt = seen["job"], seen["rt"]
    assert (type(job), job.experiment, job.title, job.levels, job.rerun) == (
        ScalingJob, "smoke-concurrency", "grid smoke", (1, 2), False)
    assert rt.storage == tmp_path and all(t.device == "cpu" for t in job.trials)


# --- search spaces under a changed budget -------------------------------------------------------

@pytest.mark.parametrize("name", ["bbb", "sgd"])
def test_recipes_at_the_spaces_own_budget_keep_their_released_grid_keys(name):
    assert [t.grid_key() for t in load_space(name).trials()] == RELEASED_KEYS[name]


# epoch-valued draws of the shipped spaces (written for 30 epochs) at 10 and 4 epochs, by hand:
# k * E / 30 rounded half up, an lr decay start stays >= 1, a warm-up [a, b] keeps b > a
SCALED = {10: {"lr_decay_start": {0: 0, 15: 5}, "kl_warmup": {(): [], (0, 10): [0, 3], (5, 20): [2, 7]}},
          4: {"lr_decay_start": {0: 0, 15: 2}, "kl_warmup": {(): [], (0, 10): [0, 1], (5, 20): [1, 3]}}}


@pytest.mark.parametrize("epochs", [10, 4])
@pytest.mark.parametrize("name", SHIPPED)
def test_a_shorter_budget_scales_the_epoch_valued_draws_and_nothing_else(name, epochs):
    full, short = load_space(name), load_space(name, max_epochs=epochs)
    assert short.written_for == full.written_for == 30
    for a, b in zip(full.recipes(), short.recipes()):
        assert b.keys() == a.keys()
        for key, value in a.items():
            want = SCALED[epochs][key][tuple(value) if key == "kl_warmup" else value] if key in SCALED[epochs] else value
            assert b[key] == want, (key, value)
    assert all(t.epochs == epochs for t in short.trials())  # every recipe is a valid config


@pytest.mark.parametrize("epochs", [4, 10])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_dry_runs_at_a_shorter_budget(name, epochs, tmp_path, capsys):
    rc = search.main(["--space", name, "--samples", "8", "--max-epochs", str(epochs), "--dry-run",
                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"up to {epochs} epochs each" in out.out and f"scaled from the space's 30 epochs to {epochs}" in out.out
    assert sum(line.endswith(" pending") for line in out.out.splitlines()) == len(load_space(name, 8, epochs).trials())
    assert not (tmp_path / "mlflow.db").exists()


def test_a_budget_shorter_than_the_grace_period_names_the_fix():
    with pytest.raises(ConfigError, match=r"grace_period=3 exceeds max_epochs=2: pass --max-epochs >= 3 or lower "
                                          r"budget.grace_period in the space"):
        load_space("bbb", max_epochs=2)


def test_fixed_keys_and_variants_are_scaled_too_and_the_files_budget_must_be_valid(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("fixed: {method: bbb, val_size: 300, lr_decay_start: 20, kl_warmup: [5, 20]}\n"
                 "space: {lr: {loguniform: [1.0e-3, 1.0e-2]}}\nvariants: [{lr_decay_start: 30}]\n"
                 "budget: {samples: 2, max_epochs: 30, grace_period: 1}\nselect: {metric: val_acc_p90, levels: [0.9]}\n")
    s = load_space(str(p), max_epochs=3)  # by hand: 20 -> 2, [5, 20] -> [0.5, 2] -> [1, 2], 30 -> 3
    assert (s.fixed["lr_decay_start"], s.fixed["kl_warmup"], s.variants) == (2, [1, 2], [{"lr_decay_start": 3}])
    s = load_space(str(p), max_epochs=1)  # 20 -> 0.67 -> 1 (not 0: that means constant); [5, 20] -> [0, 1]
    assert (s.fixed["lr_decay_start"], s.fixed["kl_warmup"], s.variants) == (1, [0, 1], [{"lr_decay_start": 1}])
    assert load_space(str(p)).fixed == {"method": "bbb", "val_size": 300, "lr_decay_start": 20, "kl_warmup": [5, 20]}
    p.write_text(p.read_text().replace("max_epochs: 30", "max_epochs: 0"))
    with pytest.raises(ConfigError, match="budget.max_epochs=0 is invalid"):
        load_space(str(p), max_epochs=3)


# --- synchronous successive halving -------------------------------------------------------------

def test_rungs_and_promotion_follow_the_rule():
    from suite.halving import promoted, rungs
    assert rungs(3, 30) == [3, 9, 27] and rungs(1, 4) == [1, 3] and rungs(3, 3) == [] and rungs(2, 20) == [2, 6, 18]
    # n // 3 go on (at least one), higher is better, a tie goes to the smaller grid key, missing is worst
    assert promoted({"b": 0.9, "a": 0.9, "c": 0.95, "d": None}) == ["c"]
    assert promoted({"b": 0.9, "a": 0.9, "c": 0.5}) == ["a"]
    assert promoted({"x": None, "y": float("nan"), "z": 0.1}) == ["z"]
    values = {f"k{i:02d}": i / 40 for i in range(40)}
    assert promoted(values) == [f"k{i:02d}" for i in range(39, 26, -1)]  # the best 13 of 40


TINY_SEARCH = """
fixed: {method: sgd, hidden: [16], train_subset: 2000, val_size: 1000, sparsities: [0, 0.9]}
space:
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  lr_decay_start: {choice: [0, 2]}
budget: {samples: 4, max_epochs: 4, grace_period: 1, seed: 0}
select: {metric: val_acc_mean, levels: [0.5, 0.9]}
"""


def outcome(folder):
    """grid_key -> (epochs trained, val_acc_mean per epoch) of the search's finished recipe runs."""
    from mlflow.tracking import MlflowClient
    c = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = c.get_experiment_by_name("search-space")
    out = {}
    for r in c.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'"):
        if "grid_key" in r.data.tags:
            history = [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, "val_acc_mean")]
            out[r.data.tags["grid_key"]] = (int(r.data.metrics.get("stopped_at_epoch", 4)), sorted(history))
    return out


@pytest.mark.slow
def test_a_search_gives_the_same_budgets_and_numbers_twice_also_when_killed_and_resumed(tmp_path):
    """Four recipes, rungs at epochs 1 and 3: the best at epoch 1 (by hand from the logged values)
    goes on alone to 4 epochs. The second search is killed after the first rung's decision and
    resumed: it must reach the same decisions and the same numbers."""
    import os
    import signal
    import subprocess
    import sys
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "suite.search", "--space", "space.yaml", "--cpus-per-trial", "1"]
    runs = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "space.yaml").write_text(TINY_SEARCH)
        if name == "second":
            p = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
            for line in p.stdout:
                if "stopped at epoch 1" in line:
                    break
            os.killpg(p.pid, signal.SIGKILL)  # the driver and its local Ray, nothing else
            p.wait()
        r = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs.append(outcome(folder))
    first, second = runs
    assert len(first) == 4 and second == first
    at_1 = {k: dict(h)[1] for k, (_, h) in first.items()}
    best = sorted(at_1, key=lambda k: (-at_1[k], k))[0]
    assert {k: e for k, (e, _) in first.items()} == {k: 4 if k == best else 1 for k in first}
    assert [s for s, _ in first[best][1]] == [1, 2, 3, 4]  # every epoch logged once


def test_eta_counts_a_recipe_waiting_at_a_rung_as_not_ended(tmp_path):
    from suite.sweep import Resources, Row, Setup, SweepCallback
    trials = [from_dict({"method": "sgd", "epochs": 30, "lr": lr}) for lr in (1e-3, 2e-3)]
    keys = [t.grid_key() for t in trials]
    cb = SweepCallback(Setup(None, "0", tmp_path, Resources(1, 0, None), {}), trials, "x", {}, select="val_acc_mean")
    cb.epoch_s = {"sgd": [2.0]}
    cb.rows = {keys[0]: Row(keys[0], "a", "STOPPED", "r0"), keys[1]: Row(keys[1], "b", "WAITING", "r1")}
    cb.done_epochs = {keys[0]: 9, keys[1]: 3}  # by hand: ended mean 9, so the waiting one has 6 epochs of 2 s left
    assert cb._eta() == pytest.approx(12.0)
