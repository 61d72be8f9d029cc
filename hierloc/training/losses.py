"""Training losses of the original: L2 distillation and the triplet loss variants."""

from __future__ import annotations

import torch


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Batch mean of 0.5 * |student - teacher|^2 (also the validation L2 error)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student descriptors {tuple(student.shape)} and teacher descriptors "
                         f"{tuple(teacher.shape)} differ in shape")
    return 0.5 * (student.float() - teacher.float()).pow(2).sum(dim=-1).mean()


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 0.5,
    squared: bool = True,
    loss_in: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, mean |a - p|, mean |a - n|) with the original's variants.

    With dp = |a - p| and dn = |a - n|: `loss_in` gives max(dp + margin - dn, 0), squared when
    `squared`; otherwise dp' + max(margin - dn', 0) with dp', dn' squared when `squared`.
    """
    distance_p = (anchor.float() - positive.float()).norm(dim=-1)
    distance_n = (anchor.float() - negative.float()).norm(dim=-1)
    if loss_in:
        loss = torch.clamp(distance_p + margin - distance_n, min=0.0)
        if squared:
            loss = loss.square()
    else:
        dp = distance_p.square() if squared else distance_p
        dn = distance_n.square() if squared else distance_n
        loss = dp + torch.clamp(margin - dn, min=0.0)
    return loss.mean(), distance_p.mean(), distance_n.mean()
