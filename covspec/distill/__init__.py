"""``covspec distill``: a drafter for any supported target, trained to agree with it.

The drafter shares the target's tokenizer (its processor is the target's, with the image geometry of its own tower),
starts from a checkpoint or from the target's config scaled down (``--drafter-arch``), and learns by online logit
distillation from the frozen target (SpecVLM, MASSV) on the target's own greedy answers (self-distillation): what
speculative decoding rewards is agreeing with the target, not being right. The AAL against the target is measured
before and after on held-out examples.
"""

from covspec.distill.arch import build_drafter, parse_arch
from covspec.distill.data import DEFAULT_PROMPTS, Example, load_examples
from covspec.distill.loss import distillation_loss
from covspec.distill.optim import adamw_with_schedule
from covspec.distill.train import DistillConfig, DistillReport, distill

__all__ = [
    "DEFAULT_PROMPTS",
    "DistillConfig",
    "DistillReport",
    "Example",
    "adamw_with_schedule",
    "build_drafter",
    "distill",
    "distillation_loss",
    "load_examples",
    "parse_arch",
]
