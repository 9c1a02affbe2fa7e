"""Recipe search: space validation before Ray, reproducible draws, a tiny search end to end with
resume, validation-only selection, nested MLflow runs and the exported grid."""
import pytest

from suite.config import ConfigError
from suite.space import load_space

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
])
def test_bad_spaces_fail_before_ray(tmp_path, change, needle):
    with pytest.raises(ConfigError, match=needle):
        load_space(write(tmp_path, GOOD.replace(*change)))


def test_shipped_spaces_share_one_budget_and_metric():
    spaces = [load_space(n) for n in ("sgd", "dropout", "bbb", "sparse_vd")]
    assert len({(s.budget, s.metric, s.levels) for s in spaces}) == 1
    assert {s.method for s in spaces} == {"sgd", "bbb", "sparse_vd"}
