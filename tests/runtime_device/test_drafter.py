"""The drafter's bookkeeping on a bigram model (a real ModelSequence whose logits are a table): what it drafts, what
it keeps after a verdict, a gated block, a burst's catch-up with its shadow matches, and a prefill still running."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from covspec.runtime_device.drafter import Drafter
from covspec.spec import SamplingParams, canonical_probs, logits_to_probs
from tests.runtime_edge.test_verifier import EOS, BigramSequence, V, bigram_table

GREEDY = SamplingParams()


def _drafter(params: SamplingParams = GREEDY) -> tuple[Drafter, BigramSequence]:
    sequence = BigramSequence(bigram_table(), [0])
    return Drafter(sequence, V, params, np.random.default_rng(0)), sequence


def test_greedy_drafts_follow_the_argmax_chain_with_the_canonical_rows() -> None:
    drafter, sequence = _drafter()
    tokens, rows, margins = drafter.draft(3, lambda position, margin: True)  # margins come with gating
    assert tokens == [1, 2, 3] and len(margins) == 3 and all(0 < m <= 1 for m in margins)
    expected = canonical_probs(logits_to_probs(bigram_table()[[0, 1, 2]], GREEDY))
    np.testing.assert_array_equal(rows, expected)
    assert sequence.tokens == [0, 1, 2]  # the last draft is never fed


def test_commit_keeps_the_accepted_drafts_and_feeds_the_rest_next_round() -> None:
    drafter, sequence = _drafter()
    tokens, _, _ = drafter.draft(3)
    drafter.commit(tokens, 1, 4)  # 1 accepted, correction 4
    assert sequence.tokens == [0, 1] and drafter.pending == [4]
    tokens, _, _ = drafter.draft(2)
    assert tokens == [5, 5] and sequence.tokens == [0, 1, 4, 5]


def test_a_gated_block_keeps_what_it_fed() -> None:
    drafter, sequence = _drafter()
    tokens, rows, _ = drafter.draft(4, lambda position, margin: position < 2)  # stop before the third token
    assert tokens == [1, 2] and rows.shape == (2, V)
    assert sequence.tokens == [0, 1, 2]  # both drafts were fed (the stop came after scoring the third position)
    drafter.commit(tokens, 2, 3)  # all accepted + bonus
    assert sequence.tokens == [0, 1, 2] and drafter.pending == [3]
    assert drafter.draft(1)[0] == [4]


def test_catch_up_feeds_a_burst_and_reports_shadow_matches() -> None:
    drafter, sequence = _drafter()
    drafter.commit([], 0, 1)  # a round without drafts: its token is pending
    shadow = drafter.catch_up([2, 4, EOS])  # after 1 the argmax is 2 (match), after 2 it is 3 (not 4), after 4 EOS
    assert shadow == [True, False, True]
    assert sequence.tokens == [0, 1, 2, 4, EOS] and drafter.pending == []
    tokens, _, _ = drafter.draft(1)  # drafting resumes from the burst's last token, nothing re-fed
    assert tokens == [int(np.argmax(bigram_table()[EOS]))] and sequence.tokens == [0, 1, 2, 4, EOS]


def test_a_prefill_still_running_is_awaited_only_when_drafting_needs_it() -> None:
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: BigramSequence(bigram_table(), [0]))
        drafter = Drafter(future, V, GREEDY, np.random.default_rng(0))
        assert drafter.draft(2)[0] == [1, 2]
