"""Each verify mode, both halves in one process (edge ``decide``, device ``resolve``, edge ``check_commit``): under
sampling every mode and every verdict form it may send draws (accepted, token) from the exact law of speculative
sampling; greedy is the argmax chain; the uplink carries exactly what the mode promises."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from covspec.errors import ProtocolError
from covspec.protocol import VerifyMode
from covspec.protocol.modes import AwaitedCommit, CompactRules, check_commit, mode_rules, resolve_verify_mode
from covspec.spec import SamplingParams, canonical_probs, verdict_distribution
from tests.spec.test_verify_sampler import DRAFT_PROBS, DRAFT_TOKENS, TARGET_PROBS, assert_frequencies_match

TRIALS = 12_000
SAMPLING = SamplingParams(temperature=1.0)
TARGET_LOGITS = np.log(np.maximum(TARGET_PROBS, 1e-300))  # canonical_probs(softmax(.)) gives TARGET_PROBS back


def _round(mode: VerifyMode, rng: np.random.Generator, params: SamplingParams = SAMPLING) -> tuple[int, int, str]:
    """One round through both halves; returns (accepted, token, form of the verdict)."""
    rules = mode_rules(mode)
    draft = DRAFT_TOKENS.tolist()
    request = rules.request(1, draft, DRAFT_PROBS, None, params)
    rules.check_request(request, params)
    decision = rules.decide(1, DRAFT_TOKENS.astype(np.int64), TARGET_LOGITS, request, params, rng)
    verdict = decision.verdict
    form = "sparse" if verdict.sparse_rows else "residual" if verdict.target_row is not None else "decided"
    outcome = rules.resolve(verdict, draft, DRAFT_PROBS, rng)
    if decision.committed is None:
        assert outcome.commit is not None and decision.awaited is not None
        check_commit(decision.awaited, outcome.commit)  # the edge would accept this commit
    else:
        assert outcome.commit is None and decision.committed[-1] == outcome.token
    return outcome.accepted, outcome.token, form


def test_target_logits_reproduce_the_table() -> None:
    np.testing.assert_allclose(canonical_probs(np.exp(TARGET_LOGITS)), TARGET_PROBS, atol=1e-12)


@pytest.mark.parametrize("mode", [VerifyMode.VANILLA, VerifyMode.DSSD, VerifyMode.COMPACT])
def test_every_mode_draws_from_the_speculative_sampling_law(mode) -> None:
    law = verdict_distribution(DRAFT_TOKENS, DRAFT_PROBS, TARGET_PROBS)
    rng = np.random.default_rng(5)
    counts: Counter = Counter()
    forms: Counter = Counter()
    for _ in range(TRIALS):
        accepted, token, form = _round(mode, rng)
        counts[(accepted, token)] += 1
        forms[form] += 1
    assert_frequencies_match(counts, law, TRIALS)
    if mode is VerifyMode.DSSD:
        assert forms["residual"] > 0 and forms["decided"] > 0
    if mode is VerifyMode.COMPACT:  # no top-k: 4 dense rows cost more than one row, so the residual form is taken
        assert forms["sparse"] == 0 and forms["residual"] > 0


def test_compact_with_a_small_top_k_sends_sparse_rows_and_no_scalars() -> None:
    params = SamplingParams(temperature=1.0, top_k=1)
    vocab = 4000
    probs = np.full((2, vocab), 1.0 / vocab)
    request = CompactRules().request(1, [3, 7], probs, None, params)
    assert request.draft_token_probs is None and request.draft_probs is None  # ids only
    dense = CompactRules().request(1, [3, 7], probs, None, SamplingParams(temperature=1.0))
    assert dense.draft_token_probs is not None and dense.draft_token_probs.shape == (2,)


@pytest.mark.parametrize("mode", list(VerifyMode))
def test_greedy_is_the_argmax_chain_and_sends_ids_only(mode) -> None:
    greedy = SamplingParams()
    target_argmax = TARGET_PROBS.argmax(axis=-1)  # [1, 3, 0, 3]
    draft = [1, 3, 2]  # two right, the third wrong
    rules = mode_rules(mode)
    request = rules.request(1, draft, DRAFT_PROBS, None, greedy)
    assert request.draft_token_probs is None
    assert (request.draft_probs is not None) == (resolve_verify_mode(mode) is VerifyMode.VANILLA)
    decision = rules.decide(1, np.array(draft), TARGET_LOGITS, request, greedy, np.random.default_rng(0))
    assert decision.committed == [1, 3, int(target_argmax[2])]


def test_auto_resolves_to_compact() -> None:
    assert resolve_verify_mode(VerifyMode.AUTO) is VerifyMode.COMPACT
    assert mode_rules(VerifyMode.AUTO).mode is VerifyMode.COMPACT


def test_commits_the_verdict_did_not_allow_are_refused() -> None:
    rng = np.random.default_rng(0)
    rules = mode_rules(VerifyMode.DSSD)
    request = rules.request(1, DRAFT_TOKENS.tolist(), DRAFT_PROBS, None, SAMPLING)
    while True:  # until the edge rejects somewhere: a residual verdict the device completes
        decision = rules.decide(1, DRAFT_TOKENS.astype(np.int64), TARGET_LOGITS, request, SAMPLING, rng)
        if decision.awaited is not None:
            break
    accepted = decision.verdict.accepted
    with pytest.raises(ProtocolError, match="allows"):
        check_commit(decision.awaited, (accepted + 1, 0))
    sparse = AwaitedCommit(DRAFT_TOKENS.astype(np.int64), None, TARGET_PROBS)  # the device decides the count
    check_commit(sparse, (2, 0))
    with pytest.raises(ProtocolError, match="zero target probability"):
        check_commit(sparse, (2, 1))  # token 1 has no target mass at position 2
    with pytest.raises(ProtocolError, match="allows"):
        check_commit(sparse, (4, 0))
