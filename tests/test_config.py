import subprocess
import sys

import pytest
import torch

from suite.config import ConfigError, TrialConfig, from_dict, load_grid


@pytest.mark.parametrize("bad,needle", [
    ({"methd": "sgd"}, "unknown key 'methd'.*Did you mean method"),
    ({"method": "svm"}, "method='svm' is invalid: allowed sgd \\| bbb"),
    ({"dropout": 1.0}, "dropout=1.0 is invalid"),
    ({"dropout": -0.1}, "dropout=-0.1 is invalid"),
    ({"method": "bbb", "dropout": 0.5}, "dropout is a setting of method sgd, not of method='bbb'"),
    ({"method": "sgd", "prior_pi": 0.3}, "prior_pi is a setting of method bbb, not of method='sgd'"),
    ({"protocol": "prune"}, "protocol='prune' is invalid: allowed oneshot \\| finetune \\| natural"),
    ({"protocol": "finetune"}, "finetune_epochs=0 is invalid: allowed an integer >= 1 with protocol=finetune"),
    ({"protocol": "finetune", "finetune_epochs": -1}, "finetune_epochs=-1 is invalid"),
    ({"finetune_epochs": 3}, "finetune_epochs=3 is invalid: allowed 0 with protocol=oneshot"),
    ({"protocol": "natural"}, "protocol='natural' is invalid: allowed oneshot \\| finetune \\| gradual \\| gradual_train \\| "
                              "iterative "
                              "for method=sgd"),
    ({"method": "bbb", "kl_warmup": [5, 2]}, "kl_warmup=\\[5, 2\\] is invalid"),
    ({"momentum": 0.9}, "momentum=0.9 is invalid: allowed a number in \\[0, 1\\), and 0 unless optimizer=sgd"),
    ({"epochs": 0}, "epochs=0 is invalid"),
    ({"epochs": 2.5}, "epochs=2.5 has the wrong type: expected an integer"),
    ({"sparsities": [0.5, 1.2]}, "sparsities=.* is invalid"),
    ({"hidden": "a,b"}, "hidden=.* has the wrong type: expected a list of integers"),
    ({"lr": True}, "lr=True has the wrong type"),
    ({"dataset": "cifar"}, "dataset='cifar' is invalid: allowed mnist \\| fmnist"),
    ({"pruner": "snr"}, "pruner='snr' is invalid"),
    ({"val_size": 60000}, "val_size=60000 is invalid"),
    ({"method": "bbb", "prior_sigma1": 0.0025, "prior_sigma2": 1.0},
     "prior_sigma2=1.0 is invalid: allowed a std below prior_sigma1"),
    ({"method": "bbb", "prior_sigma2": 1e-40}, "prior_sigma2=1e-40 is invalid: allowed a std with log"),
    ({"seed": 2 ** 40}, "seed=1099511627776 is invalid"),
])
def test_invalid_values_name_the_field(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(bad)


def test_grid_key_ignores_runtime_fields_only():
    a = TrialConfig(method="bbb", device="cpu", data_dir="/x", compile=False)
    b = TrialConfig(method="bbb", device="auto", data_dir="", compile=True)
    assert a.grid_key() == b.grid_key()
    assert a.grid_key() != TrialConfig(method="bbb", seed=1).grid_key()


@pytest.mark.slow  # a CLI subprocess
def test_cli_rejects_bad_value_before_training():
    r = subprocess.run([sys.executable, "-m", "suite.trial", "--method", "bbb", "--dropout", "0.5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "dropout is a setting of method sgd, not of method='bbb'" in r.stderr and "epoch" not in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--json", "/no/such/dir/out.json"], "/no/such/dir does not exist"),
    (["--threads", "0"], "--threads=0 is invalid"),
    # on a GPU machine --device cuda is valid, so this case only exists where there is none
    *([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA GPU is visible")]),
])
def test_cli_rejects_bad_runtime_options_before_training(args, needle, capsys):
    """In-process (the subprocess path is the test above): argparse's exit 2 and one message."""
    from suite.trial import main
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    assert e.value.code == 2 and needle in out.err and "epoch" not in out.out


def test_grid_expansion_counts_and_drops_bbb_with_dropout(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("fixed: {epochs: 1}\ngrid:\n  method: [sgd, bbb]\n  dropout: [0, 0.5]\n  seed: [0, 1, 2]\n")
    g = load_grid(str(p))
    assert len(g.trials) == 9 and len(g.dropped) == 3  # 2x2x3 = 12, minus bbb x 0.5 x 3 seeds
    assert len({t.grid_key() for t in g.trials}) == 9


@pytest.mark.parametrize("text,needle", [
    ("grid:\n  methods: [sgd]\n", "unknown key 'methods'.*Did you mean method"),
    ("fixed: {epochs: many}\n", "epochs='many' has the wrong type"),
    ("fixed: {lr: -1}\n", "lr=-1.0 is invalid"),
    ("grid:\n  seed: 3\n", "grid axis 'seed' must be a non-empty list"),
    ("fixd: {}\n", "top-level keys"),
    ("grid: {method: [sgd\n", "not valid YAML"),
    ("grid:\n  - method\n", "'grid' must be a mapping"),
    ("grid:\n  method: [bbb]\n  dropout: [abc]\n", "dropout='abc' has the wrong type"),
])
def test_bad_grids_fail_with_the_key(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_grid(str(p))


def test_unknown_grid_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="unknown grid 'nope'.*smoke"):
        load_grid("nope")


@pytest.mark.parametrize("name", ["smoke", "paper", "full", "scaling"])
def test_shipped_grids_expand(name):
    g = load_grid(name)
    assert g.trials


def test_a_config_written_before_protocols_owned_their_settings_still_loads():
    """Every config.json logged before carries the six retraining settings under every protocol, at
    their released values where the protocol did not use them: it loads to the same grid point."""
    released = {"finetune_epochs": 0, "finetune_lr": None, "gradual_epochs": [], "gradual_interval": 100,
                "iterative_fraction": 0.5, "rewind_epoch": -1}
    old = {**TrialConfig(method="sparse_vd", protocol="natural").to_dict(), **released}
    assert from_dict(old).grid_key() == TrialConfig(method="sparse_vd", protocol="natural").grid_key()
    ft = {**TrialConfig(protocol="finetune", finetune_epochs=10).to_dict(), **{k: v for k, v in released.items()
                                                                             if k not in ("finetune_epochs", "finetune_lr")}}
    assert from_dict(ft).grid_key() == TrialConfig(protocol="finetune", finetune_epochs=10).grid_key()
    with pytest.raises(ConfigError, match=r"rewind_epoch=2 is invalid: allowed -1 with protocol=finetune \(only iterative"):
        from_dict({**ft, "rewind_epoch": 2})
