import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk  # the second implementation; installed with mlflow, not used by suite/

from suite.config import TrialConfig
from suite.data import images
from suite.evaluate import metrics, ood
from suite.evaluate.level import probes
from suite.methods import build

# in-distribution (negative) and OOD (positive) scores with one tie across the classes
IN, OUT = [0.1, 0.4, 0.6], [0.4, 0.7, 0.9]


def test_auroc_hand_case():
    # pairs (OOD, in) won by the OOD score: 0.4 beats 0.1, ties 0.4 (1/2), loses to 0.6 -> 1.5;
    # 0.7 and 0.9 beat all three -> 3 + 3. AUROC = 7.5 / 9. Ranks: 0.1:1, 0.4:2.5, 0.4:2.5, 0.6:4,
    # 0.7:5, 0.9:6; OOD rank sum 13.5, U = 13.5 - 3*4/2 = 7.5, the same.
    assert ood.auroc(IN, OUT) == pytest.approx(7.5 / 9)
    assert ood.auroc(OUT, IN) == pytest.approx(1.5 / 9)  # swapping the classes: 1 - AUROC


def test_aupr_hand_case():
    # descending thresholds (TP, predicted positive): 0.9 (1, 1), 0.7 (2, 2), 0.6 (2, 3), 0.4 (3, 5),
    # 0.1 (3, 6); recall steps of 1/3 at 0.9, 0.7 and 0.4 with precision 1, 1, 3/5:
    # AP = (1 + 1 + 3/5) / 3 = 13/15.
    assert ood.aupr(IN, OUT) == pytest.approx(13 / 15)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_aupr_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    s_in = np.round(rng.normal(0, 1, 200), 1)  # rounded: many ties, within and across the classes
    s_out = np.round(rng.normal(0.7, 1, 150), 1)
    y = np.r_[np.zeros(200), np.ones(150)]
    s = np.r_[s_in, s_out]
    assert ood.auroc(s_in, s_out) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert ood.aupr(s_in, s_out) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)


def test_entropy_decomposition_hand_example():
    # input 0: two confident samples that disagree -> total ln 2, expected 0 (0 log 0 = 0), MI ln 2;
    # input 1: two samples that agree on 50/50 -> total ln 2, expected ln 2, MI 0.
    samples = torch.tensor([[[1.0, 0.0], [0.5, 0.5]],
                            [[0.0, 1.0], [0.5, 0.5]]])  # [S=2, N=2, C=2]
    d = ood.decompose(samples)
    ln2 = math.log(2)
    torch.testing.assert_close(d["entropy"], torch.tensor([ln2, ln2]))
    torch.testing.assert_close(d["expected_entropy"], torch.tensor([0.0, ln2]))
    torch.testing.assert_close(d["mi"], torch.tensor([ln2, 0.0]))


def test_mc_samples_average_to_predict_mc():
    m = build(TrialConfig(method="bbb", hidden=(16,), compile=False)).eval()
    x = torch.rand(20, 784)
    torch.manual_seed(3)
    (s,) = ood.mc_samples_on(m, [x], 4)
    torch.manual_seed(3)
    torch.testing.assert_close(s.mean(0), m.predict_mc(x, 4), rtol=0, atol=0)


def test_detection_names_and_a_separable_case():
    confident = torch.tensor([[0.98, 0.01, 0.01]]).repeat(5, 1)
    flat = torch.full((4, 3), 1 / 3)
    out = ood.detection(confident, flat, "p90", confident[None].repeat(3, 1, 1), flat[None].repeat(3, 1, 1))
    assert out["ood_auroc_entropy_p90"] == 1.0 and out["ood_aupr_entropy_p90"] == 1.0
    assert out["ood_auroc_entropy_mc_p90"] == 1.0 and out["ood_auroc_expected_entropy_mc_p90"] == 1.0
    assert out["ood_auroc_mi_mc_p90"] == 0.5  # every sample agrees: MI is 0 everywhere, all tied
    assert len(out) == 2 + 6


def test_rotation_by_0_is_the_identity_and_by_90_is_rot90_counter_clockwise():
    x = torch.rand(3, 784)
    assert torch.equal(ood.rotate(x, 0), x)
    torch.testing.assert_close(ood.rotate(x, 360), x, rtol=0, atol=1e-5)  # the interpolating path
    img = x.reshape(3, 28, 28)
    # torch.rot90(k=1, dims=(-2, -1)) turns rows into columns counter-clockwise as displayed
    # (row 0 at the top): the top-right pixel moves to the top-left.
    torch.testing.assert_close(ood.rotate(img, 90), torch.rot90(img, 1, (-2, -1)), rtol=0, atol=1e-5)
    corner = torch.zeros(28, 28)
    corner[0, 27] = 1.0
    assert ood.rotate(corner[None], 90)[0, 0, 0] == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(ood.rotate(img, 180), torch.rot90(img, 2, (-2, -1)), rtol=0, atol=1e-5)


def test_shift_reports_each_angle_and_the_mean():
    torch.manual_seed(0)
    w = torch.randn(784, 10)
    predict = lambda x: torch.softmax(x @ w, -1)  # noqa: E731  a fixed classifier
    x, y = torch.rand(50, 784), torch.randint(0, 10, (50,))
    out = ood.shift(predict, ood.rotations(x, (0, 90)), y, "p50")
    assert out["shift_acc_r0_p50"] == pytest.approx(metrics.classification(predict(x), y)["acc"], abs=1e-6)
    rot = torch.rot90(x.reshape(50, 28, 28), 1, (-2, -1)).reshape(50, 784)
    assert out["shift_nll_r90_p50"] == pytest.approx(metrics.classification(predict(rot), y)["nll"], rel=1e-4)
    assert out["shift_ece_mean_p50"] == pytest.approx((out["shift_ece_r0_p50"] + out["shift_ece_r90_p50"]) / 2)
    assert len(out) == 3 * 2 + 3


def test_the_probes_are_the_whole_test_splits(mnist, fmnist):
    """OOD detection and the shift read every test image: the first 2000 of MNIST's are not a random
    sample of its 10k (a Sparse VD net's AUROC: 0.873 there, 0.905 on all)."""
    cpu = torch.device("cpu")
    x, y, x_ood = images(mnist.x_test, cpu), torch.tensor(mnist.y_test), images(fmnist.x_test, cpu)
    p = probes(x, y, x_ood)
    assert p.x_ood.shape == (10_000, 784) and torch.equal(p.x_ood, x_ood)  # the published test splits: 10k each
    assert sorted(p.rotated) == list(ood.ANGLES)
    assert all(r.shape == (10_000, 784) for r in p.rotated.values())
    assert torch.equal(p.rotated[0], x) and torch.equal(p.y_rotated, y)
