"""The distillation objective: match the target's distribution at every answer position, plus a little of the
answer itself."""

from __future__ import annotations

from typing import Any


def distillation_loss(
    student_logits: Any, teacher_logits: Any, labels: Any, temperature: float = 1.0, label_weight: float = 0.1
) -> Any:
    """KL(teacher || student) at temperature ``temperature`` (scaled by T² so gradients keep their size), averaged
    over positions, plus ``label_weight`` times the cross-entropy of ``labels``.

    student_logits, teacher_logits: [positions, vocab]; labels: [positions]. The teacher carries no gradient.
    """
    import torch.nn.functional as F

    assert student_logits.shape == teacher_logits.shape and student_logits.shape[0] == labels.shape[0]
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2
    return kl + label_weight * F.cross_entropy(student_logits, labels)


__all__ = ["distillation_loss"]
