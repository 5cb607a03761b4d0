"""The distillation objective at the math level."""

from __future__ import annotations

import pytest

from covspec.distill import distillation_loss


def test_equal_distributions_leave_only_the_label_term() -> None:
    import torch
    import torch.nn.functional as F

    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2, 3, 4, 5])
    loss = distillation_loss(logits, logits.clone(), labels, temperature=2.0, label_weight=0.3)
    assert loss.item() == pytest.approx(0.3 * F.cross_entropy(logits, labels).item(), abs=1e-6)


def test_kl_matches_its_definition_and_only_the_student_learns() -> None:
    import torch

    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 7, generator=g, requires_grad=True)
    teacher = torch.randn(4, 7, generator=g, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    t = 1.5
    loss = distillation_loss(student, teacher, labels, temperature=t, label_weight=0.0)
    p = torch.softmax(teacher / t, -1)
    expected = (p * (p.log() - torch.log_softmax(student / t, -1))).sum(-1).mean() * t**2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
