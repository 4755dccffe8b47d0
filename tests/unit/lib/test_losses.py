"""Tests of lib.losses.FocalTverskyLoss with hand-computed Tversky indices.

Notation (foreground channel, background excluded): ``TI = (tp + s) / (tp + alpha fp + beta fn + s)`` with
MONAI's smoothing ``s = 1e-5``; the loss is ``mean((1 - TI) ** gamma)`` over classes, with TI over the whole batch
(``batch=True``, the default) or per item (``batch=False``).
"""

import pytest
import torch

from lib.losses import FocalTverskyCELoss, FocalTverskyLoss

TARGET = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 2, 2)  # 2 foreground pixels of 4


def _logits(foreground, margin=20.0):
    """(1, 2, 2, 2) logits: confident foreground where ``foreground`` is 1, confident background elsewhere."""
    fg = torch.tensor(foreground, dtype=torch.float32).reshape(1, 1, 2, 2)
    return torch.cat([(1 - 2 * fg) * margin / 2, (2 * fg - 1) * margin / 2], 1)


@pytest.mark.parametrize("gamma", [0.5, 0.75, 1.0, 2.0])
@pytest.mark.parametrize("shape", [(2, 2), (4, 4, 4)])
def test_perfect_prediction_near_zero_and_wrong_near_one(gamma, shape):
    target = torch.zeros(1, 1, *shape, dtype=torch.long)
    target.view(-1)[: target.numel() // 2] = 1
    fg = target.float()
    perfect = torch.cat([(1 - 2 * fg) * 10, (2 * fg - 1) * 10], 1)
    loss = FocalTverskyLoss(gamma=gamma)
    good, bad = float(loss(perfect, target)), float(loss(-perfect, target))
    assert 0.0 <= good < 1e-3
    assert bad > 0.99
    assert bad > good


def test_uncertain_prediction_hand_computed():
    # p = 0.5 everywhere: tp = fp = fn = 1, TI = (1 + s) / (1 + 0.3 + 0.7 + s) ~= 0.5
    logits = torch.zeros(1, 2, 2, 2)
    assert float(FocalTverskyLoss(gamma=1.0)(logits, TARGET)) == pytest.approx(0.5, rel=1e-4)
    assert float(FocalTverskyLoss(gamma=0.75)(logits, TARGET)) == pytest.approx(0.5**0.75, rel=1e-4)  # 0.5946
    assert float(FocalTverskyLoss(gamma=2.0)(logits, TARGET)) == pytest.approx(0.25, rel=1e-4)


@pytest.mark.parametrize(
    "alpha, beta, loss_fp, loss_fn",
    [
        # one false positive:  tp = 2, fp = 1, fn = 0: TI = 2 / (2 + alpha)
        # one false negative:  tp = 1, fp = 0, fn = 1: TI = 1 / (1 + beta)
        (0.3, 0.7, 1 - 2 / 2.3, 1 - 1 / 1.7),  # 0.1304 < 0.4118: misses cost more (recall)
        (0.7, 0.3, 1 - 2 / 2.7, 1 - 1 / 1.3),  # 0.2593 > 0.2308
        (0.5, 0.5, 1 - 2 / 2.5, 1 - 1 / 1.5),  # Dice: 0.2 < 0.3333
    ],
)
@pytest.mark.parametrize("gamma", [0.75, 1.0])
def test_alpha_weighs_false_positives_beta_false_negatives(alpha, beta, loss_fp, loss_fn, gamma):
    loss = FocalTverskyLoss(alpha=alpha, beta=beta, gamma=gamma)
    fp = float(loss(_logits([1, 1, 1, 0]), TARGET))
    fn = float(loss(_logits([1, 0, 0, 0]), TARGET))
    assert fp == pytest.approx(loss_fp**gamma, rel=1e-4)
    assert fn == pytest.approx(loss_fn**gamma, rel=1e-4)


@pytest.mark.parametrize("prediction", [[1, 1, 1, 0], [1, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], [1, 0, 1, 0]])
def test_gamma_below_one_raises_partial_errors(prediction):
    """For 0 < 1 - TI < 1 and one term: loss(gamma) = loss(1) ** gamma, so gamma < 1 gives the larger loss."""
    logits = _logits(prediction, margin=4.0)
    linear = float(FocalTverskyLoss(gamma=1.0)(logits, TARGET))
    focal = float(FocalTverskyLoss(gamma=0.75)(logits, TARGET))
    assert 0.0 < linear < 1.0
    assert focal == pytest.approx(linear**0.75, rel=1e-5)
    assert focal > linear


def test_mean_over_batch_per_item():
    target = torch.cat([TARGET, TARGET])
    logits = torch.cat([_logits([1, 1, 0, 0]), torch.zeros(1, 2, 2, 2)])  # perfect, then p = 0.5
    loss = float(FocalTverskyLoss(gamma=0.75, batch=False)(logits, target))
    assert loss == pytest.approx((0.0 + 0.5**0.75) / 2, abs=1e-4)


def test_index_over_the_whole_batch():
    # perfect item (tp 2) + p = 0.5 item (tp 1, fp 1, fn 1): TI = 3 / (3 + 0.3 + 0.7)
    target = torch.cat([TARGET, TARGET])
    logits = torch.cat([_logits([1, 1, 0, 0]), torch.zeros(1, 2, 2, 2)])
    assert float(FocalTverskyLoss(gamma=1.0)(logits, target)) == pytest.approx(1 - 3 / 4, rel=1e-4)


def _healthy_slice_gradient(loss_fn):
    """Gradient on a healthy item's foreground logits where it marks false positives, next to a tumor item."""
    healthy = torch.zeros_like(TARGET)
    logits = torch.cat([_logits([1, 1, 0, 0]), _logits([1, 1, 1, 1], margin=2.0)]).requires_grad_(True)
    loss_fn(logits, torch.cat([TARGET, healthy])).backward()
    return logits.grad[1, 1]


def test_per_item_loss_ignores_false_positives_on_healthy_slices():
    """The bug the batch form fixes: per item, an empty truth gives a constant loss and no gradient."""
    assert float(_healthy_slice_gradient(FocalTverskyLoss(batch=False)).abs().max()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss_fn", [FocalTverskyLoss(), FocalTverskyCELoss(), FocalTverskyCELoss(ce_weight=0.0)])
def test_false_positives_on_healthy_slices_are_pushed_down(loss_fn):
    grad = _healthy_slice_gradient(loss_fn)
    assert float(grad.min()) > 0  # descending the loss lowers every false foreground logit


def test_cross_entropy_term_hand_computed():
    logits = torch.zeros(1, 2, 2, 2)  # p = 0.5: CE = ln 2, Tversky (gamma 1) 0.5
    assert float(FocalTverskyCELoss(ce_weight=2.0, gamma=1.0)(logits, TARGET)) == pytest.approx(
        0.5 + 2 * 0.6931472, rel=1e-4
    )


def test_negative_cross_entropy_weight_refused():
    with pytest.raises(ValueError, match="ce_weight must be >= 0, got -1"):
        FocalTverskyCELoss(ce_weight=-1)


@pytest.mark.parametrize("classes", [2, 3])
def test_gradients_flow_and_descend(classes):
    torch.manual_seed(0)
    target = torch.randint(0, classes, (2, 1, 6, 6))
    logits = torch.randn(2, classes, 6, 6, requires_grad=True)
    loss_fn = FocalTverskyLoss()
    loss = loss_fn(logits, target)
    assert loss.ndim == 0 and loss.requires_grad
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        after = loss_fn(logits - 1.0 * grad / grad.abs().max(), target)
    assert float(after) < float(loss)


def test_gradients_finite_at_perfect_prediction():
    logits = (_logits([1, 1, 0, 0], margin=100.0)).requires_grad_(True)
    loss = FocalTverskyLoss(gamma=0.5)(logits, TARGET)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -0.3}, "alpha"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -0.75}, "gamma"),
    ],
)
def test_non_positive_parameters_refused(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must be > 0"):
        FocalTverskyLoss(**kwargs)
