"""covspec.spec: the pure-numpy math both sides share (sampling transform, wire form, verification, counters).

Imports nothing else of covspec and nothing heavier than numpy.
"""

from covspec.spec.sampling import (
    SamplingParams,
    SparseProbs,
    canonical_probs,
    dense_from_sparse,
    from_wire_probs,
    logits_to_probs,
    sample_token,
    sparse_from_dense,
    to_wire_probs,
)
from covspec.spec.stats import SpecStats
from covspec.spec.verify import (
    Verdict,
    accept_prefix,
    acceptance_probabilities,
    acceptance_probability,
    accepted_count_distribution,
    dssd_verdict_distribution,
    residual_distribution,
    sample_residual,
    verdict_distribution,
    verify_dssd,
    verify_greedy,
    verify_stochastic,
)

__all__ = [
    "SamplingParams",
    "SparseProbs",
    "SpecStats",
    "Verdict",
    "accept_prefix",
    "acceptance_probabilities",
    "acceptance_probability",
    "accepted_count_distribution",
    "canonical_probs",
    "dense_from_sparse",
    "dssd_verdict_distribution",
    "from_wire_probs",
    "logits_to_probs",
    "residual_distribution",
    "sample_residual",
    "sample_token",
    "sparse_from_dense",
    "to_wire_probs",
    "verdict_distribution",
    "verify_dssd",
    "verify_greedy",
    "verify_stochastic",
]
