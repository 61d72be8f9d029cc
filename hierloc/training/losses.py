"""Training losses of the original: L2 distillation and the triplet loss variants."""

from __future__ import annotations

import torch


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Batch mean of 0.5 * |student - teacher|^2 (also the validation L2 error)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student descriptors {tuple(student.shape)} and teacher descriptors "
                         f"{tuple(teacher.shape)} differ in shape")
    return 0.5 * (student.float() - teacher.float()).pow(2).sum(dim=-1).mean()


def similarity_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, anchors: torch.Tensor,
                                 temperature: float = 0.05) -> torch.Tensor:
    """Batch mean of KL(p_teacher || p_student) over anchor similarities: the teacher's ranking, taught.

    p_teacher = softmax(teacher @ anchors^T / temperature) and p_student the same with the student's
    descriptors; `anchors` [M, D] are teacher descriptors (e.g. of the training images). The L2 loss
    treats every direction of the error alike; retrieval only needs the student to rank the anchors
    as the teacher does, and a low temperature weighs the teacher's nearest anchors most. Zero when
    student == teacher; with unit descriptors and anchors spanning the space, only then.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student descriptors {tuple(student.shape)} and teacher descriptors "
                         f"{tuple(teacher.shape)} differ in shape")
    if anchors.ndim != 2 or anchors.shape[1] != teacher.shape[-1]:
        raise ValueError(f"anchors {tuple(anchors.shape)} must be [M, {teacher.shape[-1]}]")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    anchors = anchors.float()
    teacher_log_p = torch.log_softmax(teacher.float() @ anchors.T / temperature, dim=-1)
    student_log_p = torch.log_softmax(student.float() @ anchors.T / temperature, dim=-1)
    return (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(dim=-1).mean()


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
