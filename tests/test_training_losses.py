"""Training losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from hierloc.training.losses import distillation_loss, triplet_loss


def test_distillation_loss_is_half_squared_distance_averaged_over_the_batch():
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # 0.5 * (1) and 0.5 * (9 + 16), averaged over 2
    assert distillation_loss(student, teacher).item() == pytest.approx((0.5 + 12.5) / 2)


def test_distillation_loss_refuses_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.fixture
def triplet():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[0.3, 0.4], [0.0, 0.1]])  # dp = 0.5, 0.1
    negative = torch.tensor([[0.6, 0.0], [0.0, 2.0]])  # dn = 0.6, 2.0
    return anchor, positive, negative


@pytest.mark.parametrize("squared,loss_in,expected", [
    # loss_in: max(dp + m - dn, 0), m = 0.3: max(0.2, 0) = 0.2 and max(-1.6, 0) = 0
    (False, True, (0.2 + 0.0) / 2),
    (True, True, (0.2 ** 2 + 0.0) / 2),
    # otherwise dp + max(m - dn, 0): 0.5 + 0 and 0.1 + 0
    (False, False, (0.5 + 0.1) / 2),
    # squared: dp^2 + max(m - dn^2, 0): 0.25 + max(0.3 - 0.36, 0) = 0.25; 0.01 + 0
    (True, False, (0.25 + 0.01) / 2),
])
def test_triplet_loss_variants(triplet, squared, loss_in, expected):
    loss, dp, dn = triplet_loss(*triplet, margin=0.3, squared=squared, loss_in=loss_in)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert dp.item() == pytest.approx((0.5 + 0.1) / 2)
    assert dn.item() == pytest.approx((0.6 + 2.0) / 2)


def test_triplet_margin_term_active_for_close_negatives():
    anchor = torch.zeros(1, 3)
    positive = torch.tensor([[0.0, 0.0, 0.2]])
    negative = torch.tensor([[0.1, 0.0, 0.0]])
    loss, _, _ = triplet_loss(anchor, positive, negative, margin=0.5, squared=False, loss_in=False)
    assert loss.item() == pytest.approx(0.2 + (0.5 - 0.1))
    loss, _, _ = triplet_loss(anchor, positive, negative, margin=0.5, squared=True, loss_in=True)
    assert loss.item() == pytest.approx((0.2 + 0.5 - 0.1) ** 2)


def test_triplet_loss_gradients_are_finite():
    a = torch.randn(4, 8, requires_grad=True)
    loss, _, _ = triplet_loss(a, a.detach() + 0.1, -a.detach(), margin=0.5)
    loss.backward()
    assert torch.isfinite(a.grad).all() and not math.isnan(loss.item())
