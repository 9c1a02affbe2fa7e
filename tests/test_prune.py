
import numpy as np
import pytest
import torch

from suite import prune
from suite.config import TrialConfig
from suite.evaluate.metrics import accuracy
from suite.methods import build


def small(method, **kw):
    return build(TrialConfig(method=method, hidden=(40, 30), compile=False, **kw))


def forward_zeros(model, x, flat=None):
    """Zeros among the weight matrices F.linear actually received, counted independently of prune.py."""
    with prune._CaptureLinear() as cap:
        model(x, flat)
    return sum(int((w == 0).sum()) for w, _ in cap.seen), sum(w.numel() for w, _ in cap.seen)


CASES = [("sgd", "magnitude"), ("sgd", "random"), ("bbb", "snr"), ("bbb", "magnitude"), ("bbb", "random")]


@pytest.mark.parametrize("method,pruner", CASES)
@pytest.mark.parametrize("p", [0.0, 0.5, 0.9, 0.99])
def test_global_pruning_zeroes_exactly_round_p_n(method, pruner, p):
    torch.manual_seed(0)
    model = small(method)
    allowed = prune.prunable(model, prune_biases=False)
    keep, _ = prune.keep_mask(prune.scores(model, pruner, 0), allowed, p, "global", model)
    pruned = prune.pruned_copy(model, keep)
    x = torch.rand(4, 784)
    zeros, n = forward_zeros(pruned, x)
    assert n == int(allowed.sum())
    assert zeros == round(p * n)
    assert prune.measured_sparsity(pruned, x, False)[0] == pytest.approx(round(p * n) / n)
    if method == "bbb":  # every Monte Carlo sample of a pruned weight is exactly zero
        for _ in range(3):
            assert forward_zeros(pruned, x, pruned.sample())[0] == round(p * n)
    # the original model is untouched
    assert forward_zeros(model, x)[0] == 0


def test_layer_scope_prunes_each_layer_by_the_same_fraction():
    model = small("sgd")
    allowed = prune.prunable(model, prune_biases=True)
    keep, _ = prune.keep_mask(prune.scores(model, "magnitude", 0), allowed, 0.75, "layer", model)
    for s in model.layout:
        assert int((~keep[s.start:s.end]).sum()) == round(0.75 * (s.end - s.start))


def test_biases_are_pruned_only_when_asked():
    model = small("sgd")
    for flag in (False, True):
        allowed = prune.prunable(model, flag)
        keep, _ = prune.keep_mask(prune.scores(model, "magnitude", 0), allowed, 1.0, "global", model)
        bias_pruned = sum(int((~keep[s.start:s.end]).sum()) for s in model.layout if s.is_bias)
        assert (bias_pruned > 0) == flag


def test_snr_prunes_lowest_signal_to_noise_first():
    torch.manual_seed(0)
    model = small("bbb")
    snr = model.score("snr")
    keep, thr = prune.keep_mask(prune.scores(model, "snr", 0), prune.prunable(model, False), 0.5, "global", model)
    allowed = prune.prunable(model, False)
    assert float(snr[allowed & ~keep].max()) <= float(snr[allowed & keep].min())
    assert thr == pytest.approx(float(snr[allowed & ~keep].max()))
    pruned = prune.pruned_copy(model, keep)
    assert torch.all(pruned.sigma()[~keep] == 0) and torch.all(pruned.mu[~keep] == 0)


@pytest.mark.parametrize("method", ["sgd", "bbb"])
def test_fully_pruned_model_is_at_chance(method, mnist):
    model = small(method)
    allowed = prune.prunable(model, prune_biases=True)
    keep, _ = prune.keep_mask(prune.scores(model, "magnitude", 0), allowed, 1.0, "global", model)
    pruned = prune.pruned_copy(model, keep)
    x = torch.tensor(mnist.x_test[:2000], dtype=torch.float32).reshape(2000, -1) / 255
    y = torch.tensor(mnist.y_test[:2000], dtype=torch.int64)
    probs = pruned.predict(x)
    torch.testing.assert_close(probs, torch.full_like(probs, 0.1))  # all-zero network: uniform output
    assert accuracy(probs, y) < 0.2


def test_tied_scores_are_broken_by_magnitude_then_index_as_counted_by_hand():
    """Six hand-set entries in front of W1 (every other weight scores +inf, so it is never pruned):
    scores [1, 0, 1, 1, 0, 1], point weights [0.3, -0.1, 0.1, 0.0, -0.3, 0.1]. Score 0 first, by
    |w|: 1 (0.1), 4 (0.3); then score 1 by |w|: 3 (0.0), then 2 and 5 tie at 0.1 -> index 2, 5; then 0."""
    model = small("sgd")
    score = torch.full((model.n_params,), float("inf"))
    score[:6] = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    with torch.no_grad():
        model.theta[:6] = torch.tensor([0.3, -0.1, 0.1, 0.0, -0.3, 0.1])
    assert prune.pruning_order(score[:6], model.theta[:6].abs()).tolist() == [1, 4, 3, 2, 5, 0]
    allowed = prune.prunable(model, False)
    n = int(allowed.sum())
    for k, pruned in [(3, {1, 4, 3}), (4, {1, 4, 3, 2}), (5, {1, 4, 3, 2, 5})]:
        keep, thr = prune.keep_mask(score, allowed, k / n, "global", model)
        assert set((~keep).nonzero().squeeze(1).tolist()) == pruned
        assert thr == 1.0  # the largest pruned score


def lexsort_keep(score: np.ndarray, magnitude: np.ndarray, groups: list[np.ndarray], p: float, n_params: int) -> np.ndarray:
    """The reference: numpy's lexsort (last key primary) over (index, |w|, score) within each group."""
    keep = np.ones(n_params, dtype=bool)
    for idx in groups:
        order = np.lexsort((idx, magnitude[idx], score[idx]))
        keep[idx[order[:round(p * len(idx))]]] = False
    return keep


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_the_mask_is_numpys_lexsort_at_any_thread_count(scope):
    """Scores and weights drawn from a few values each, so ties in both keys are everywhere (like Sparse VD's
    log alpha at its clip): the mask equals np.lexsort's and does not depend on the thread count."""
    torch.manual_seed(0)
    model = build(TrialConfig(method="sgd", hidden=(300, 100), compile=False))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.theta.copy_(torch.randint(-3, 4, (model.n_params,), generator=g).float() / 4)
    score = torch.randint(0, 5, (model.n_params,), generator=g).float()
    allowed = prune.prunable(model, False)
    groups = [allowed.nonzero().squeeze(1).numpy()] if scope == "global" else [
        np.arange(s.start, s.end) for s in model.layout if not s.is_bias]
    threads = torch.get_num_threads()
    try:
        for p in (0.5, 0.9, 0.98):
            masks = []
            for n in (1, 2):
                torch.set_num_threads(n)
                masks.append(prune.keep_mask(score, allowed, p, scope, model)[0])
            assert torch.equal(masks[0], masks[1])
            want = lexsort_keep(score.numpy(), model.theta.detach().abs().numpy(), groups, p, model.n_params)
            assert np.array_equal(masks[0].numpy(), want)
    finally:
        torch.set_num_threads(threads)
