"""A dense net trained once per recipe, seed and dataset (suite/dense.py): which trials share one, how
a sweep is split into waves, and that a trial started from a shared net gives the numbers of a trial
that trained the net itself, bit for bit (the reference: that trial, run in full)."""
import pytest
import torch
from test_protocols import tiny

from suite import dense, tracking
from suite.trial import run_trial, write_artifacts


def test_the_protocols_of_one_recipe_share_a_key_and_nothing_else_does():
    shared = [tiny(), tiny(protocol="finetune", finetune_epochs=2, finetune_lr=1e-4, sparsities=(0.0, 0.5)),
              tiny(protocol="gradual", finetune_epochs=3, gradual_interval=5, sparsities=(0.0, 0.98)),
              tiny(protocol="iterative", finetune_epochs=1)]
    assert len({t.dense_key() for t in shared}) == 1
    others = [tiny(seed=1), tiny(lr=2e-3), tiny(dataset="fmnist"), tiny(epochs=2), tiny(hidden=(16,)),
              tiny(val_sparsities=(0.5,))]
    assert len({t.dense_key() for t in [shared[0], *others]}) == 1 + len(others)
    # training that a protocol changes, or a snapshot of it that a shared net lacks: no key
    assert tiny(protocol="gradual_train", sparsities=(0.9,), gradual_train_epochs=(1, 1)).dense_key() is None
    assert tiny(protocol="iterative", finetune_epochs=1, rewind_epoch=0).dense_key() is None
    assert shared[1].run_tags()["dense_key"] == shared[0].dense_key()


def test_waves_train_each_net_once_and_let_started_trials_go_on():
    one, fine = tiny(), tiny(protocol="finetune", finetune_epochs=2)
    grad = tiny(protocol="gradual", finetune_epochs=3, gradual_interval=5)
    other = tiny(seed=1, protocol="finetune", finetune_epochs=2)
    own = tiny(protocol="gradual_train", sparsities=(0.9,), gradual_train_epochs=(1, 1))
    pending = [grad, fine, one, other, own]
    now, after = dense.waves(pending, have=set(), started=set())
    # the cheapest trial of each key trains its net (one-shot: 1 epoch; seed 1's only trial); the rest wait
    assert now == [one, other, own] and after == [grad, fine]
    now, after = dense.waves(pending, have={one.dense_key()}, started=set())
    assert now == pending and after == []
    now, after = dense.waves(pending, have=set(), started={grad.grid_key()})  # an interrupted trial trains it
    assert now == [grad, other, own] and after == [fine, one]


@pytest.mark.parametrize("method,producer,consumer", [
    ("sgd", {}, {"protocol": "finetune", "finetune_epochs": 1, "sparsities": (0.0, 0.5, 0.9)}),
    ("sgd", {}, {"protocol": "gradual", "finetune_epochs": 2, "gradual_interval": 5, "sparsities": (0.0, 0.9)}),
    ("sparse_vd", {"protocol": "natural"}, {"sparsities": (0.0, 0.5, 0.9)}),
])
def test_a_trial_started_from_a_stored_net_gives_the_numbers_of_one_that_trained_it(method, producer, consumer, mnist, fmnist,
                                                                                    tmp_path):
    """The net goes through a real MLflow store (the trainer's run artifacts) and the cache, as in a sweep."""
    torch.set_num_threads(1)
    trainer_cfg, cfg = tiny(method, epochs=2, **producer), tiny(method, epochs=2, **consumer)
    assert trainer_cfg.dense_key() == cfg.dense_key() and trainer_cfg.grid_key() != cfg.grid_key()
    trainer = run_trial(trainer_cfg, arrays=mnist, ood_images=fmnist.x_test)
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracking.start_run(client, tracking.ensure_experiment(client, "d"), trainer_cfg, {})
    write_artifacts(trainer, tmp_path / "art")
    tracking.finish_run(client, run_id, trainer.metrics, {}, tmp_path / "art")
    assert dense.cache(client, client.get_run(run_id), tmp_path / "dense")
    start = dense.start_state(cfg, tmp_path / "dense")
    assert start["dense"] == {"from": run_id, "epochs": 2} and "optimizer" not in start

    reference = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test)
    shared = run_trial(cfg, arrays=mnist, ood_images=fmnist.x_test, resume=start)
    timing = ("_wall_s", "_time_ms", "latency_", "peak_mem_mb", "compile_s")
    numbers = {k for k in reference.metrics if not any(t in k for t in timing)}
    assert {k: shared.metrics[k] for k in numbers} == {k: reference.metrics[k] for k in numbers}
    assert set(shared.metrics) == set(reference.metrics)
    assert shared.history == trainer.history  # training proper: the trainer's epochs, times included
    for k, v in reference.state_dict.items():
        assert torch.equal(shared.state_dict[k], v), k
    assert shared.info["dense_from"] == run_id and "dense_from" not in reference.info
    # its own time, not the trainer's epochs: what the sharing saves
    assert shared.metrics["total_wall_s"] < shared.metrics["train_wall_s"] + shared.metrics["eval_wall_s"] + 60
    assert shared.metrics["train_wall_s"] == sum(h["epoch_time_s"] for h in trainer.history)


def test_a_run_without_a_stored_net_is_not_a_source(tmp_path, capsys):
    """A run from before history.json was stored (or whose artifacts are gone) is skipped in one line."""
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = tiny()
    run_id = tracking.start_run(client, tracking.ensure_experiment(client, "d"), cfg, {})
    client.set_terminated(run_id, "FINISHED")
    assert not dense.cache(client, client.get_run(run_id), tmp_path / "dense")
    assert f"run {run_id} holds no usable net" in capsys.readouterr().out
    assert dense.start_state(cfg, tmp_path / "dense") is None
