"""The edge's round logic on a small bigram language model (a real ModelSequence whose logits are a table), so every
verdict can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from covspec.errors import ProtocolError
from covspec.models.base import ModelSequence
from covspec.protocol import RoundRequest, SessionSpec, VerifyMode
from covspec.runtime_edge.verifier import TargetState, process_round
from covspec.spec import SamplingParams

V, EOS = 6, 5


class BigramSequence(ModelSequence):
    """Logits depend on the last token only: argmax chain 0 -> 1 -> 2 -> 3 -> 4 -> 5 (EOS)."""

    def __init__(self, table: np.ndarray, prompt: list[int]) -> None:
        self.table, self.tokens, self._prompt = table, list(prompt), len(prompt)

    @property
    def prompt_length(self) -> int:
        return self._prompt

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def prefill_logits(self) -> np.ndarray:
        return self.table[self.tokens[self._prompt - 1]]

    def extend(self, tokens):
        self.tokens.extend(int(t) for t in tokens)
        return np.stack([self.table[t] for t in tokens]) if len(tokens) else np.empty((0, V))

    def crop(self, length: int) -> None:
        assert self._prompt <= length <= len(self.tokens)
        del self.tokens[length:]

    def kv_bytes(self) -> int:
        return 0


def bigram_table() -> np.ndarray:
    table = np.full((V, V), -3.0)
    for t in range(V):
        table[t, min(t + 1, EOS)] = 3.0
        table[t, (t + 3) % V] = 2.5  # a strong second choice, for sampling
    return table


def _state(mode=VerifyMode.COMPACT, temperature=0.0, max_new=10) -> TargetState:
    spec = SessionSpec(
        "p", temperature=temperature, top_k=2 if temperature else 0, max_new_tokens=max_new, verify_mode=mode, seed=0
    )
    return TargetState(spec, BigramSequence(bigram_table(), [0]), frozenset({EOS}), np.random.default_rng(0))


def _req(n, tokens, **kw) -> RoundRequest:
    return RoundRequest(n, np.asarray(tokens, dtype=np.int32), **kw)


def test_greedy_rounds_commit_and_roll_back() -> None:
    state = _state()
    verdict, outcome = process_round(state, _req(1, [1, 2, 4]))  # 1, 2 right; 4 wrong (3 expected)
    assert (verdict.accepted, verdict.token) == (2, 3)
    assert state.generated == [1, 2, 3] and outcome.committed == 3
    assert state.sequence.length == 3 and state.pending == 3  # prompt + accepted drafts; the correction is pending
    verdict, _ = process_round(state, _req(2, [4]))
    assert (verdict.accepted, verdict.token) == (1, EOS)
    assert state.generated == [1, 2, 3, 4, EOS] and state.finished
    with pytest.raises(ProtocolError) as info:
        process_round(state, _req(3, []))
    assert info.value.code == "generation_limit"


def test_retry_returns_the_stored_verdict_without_applying_twice() -> None:
    state = _state()
    first, _ = process_round(state, _req(1, [1, 9 % V]))
    generated = list(state.generated)
    again, outcome = process_round(state, _req(1, [1, 9 % V]))
    assert again is first and outcome is None and state.generated == generated


def test_round_numbers() -> None:
    state = _state()
    process_round(state, _req(1, [1]))
    process_round(state, _req(2, [3]))
    with pytest.raises(ProtocolError) as info:
        process_round(state, _req(1, [1]))
    assert info.value.code == "stale_round"
    with pytest.raises(ProtocolError) as info:
        process_round(state, _req(4, [1]))
    assert info.value.code == "future_round"


def test_limit_is_checked_before_any_forward() -> None:
    state = _state(max_new=3)
    with pytest.raises(ProtocolError) as info:
        process_round(state, _req(1, [1, 2, 3]))
    assert info.value.code == "generation_limit" and state.sequence.length == 1


def test_compact_sampling_waits_for_the_device_commit_and_checks_it() -> None:
    state = _state(temperature=1.0)
    verdict, outcome = process_round(state, _req(1, [1, 2]))
    assert verdict.accepted is None and len(verdict.sparse_rows) == 3 and outcome.accepted is None
    ids0 = set(verdict.sparse_rows[0][0].tolist())
    assert ids0 == {1, 3}  # top_k=2 support of the prefill row
    with pytest.raises(ProtocolError) as info:  # the next round must carry the commit
        process_round(state, _req(2, [4]))
    assert info.value.code == "bad_commit"
    with pytest.raises(ProtocolError) as info:  # token 0 has zero target probability at position 0
        process_round(state, _req(2, [4], commit=(0, 0)))
    assert info.value.code == "bad_commit"
    process_round(state, _req(2, [4], commit=(0, 3)))
    assert state.generated[:1] == [3]


def test_dssd_commit_must_match_the_edge_count() -> None:
    state = _state(mode=VerifyMode.DSSD, temperature=1.0)
    rng = np.random.default_rng(1)
    for n in range(1, 30):  # until the edge rejects something
        q = np.full(2, 0.999)
        verdict, _ = process_round(state, _req(n, rng.integers(0, V, 2), draft_token_probs=q))
        if verdict.target_row is not None:
            break
    else:
        pytest.fail("no rejection in 30 rounds")
    wrong = (verdict.accepted + 1) % 3
    with pytest.raises(ProtocolError) as info:
        process_round(state, _req(n + 1, [1], draft_token_probs=np.array([0.5]), commit=(wrong, 1)))
    assert info.value.code == "bad_commit"


def test_a_commit_on_the_first_round_is_bad_commit_not_an_internal_error() -> None:
    state = _state()
    with pytest.raises(ProtocolError) as info:
        process_round(state, _req(1, [1], commit=(0, 1)))
    assert info.value.code == "bad_commit"


def test_greedy_burst_decodes_the_target_chain_and_commits_it() -> None:
    state = _state(max_new=10)
    verdict, outcome = process_round(state, RoundRequest(1, np.zeros(0, dtype=np.int32), burst=3))
    assert verdict.burst_tokens.tolist() == [1, 2, 3] and outcome.burst and outcome.committed == 3
    assert state.generated == [1, 2, 3] and state.pending == 3 and state.sequence.length == 3
    assert verdict.verify_s is not None and verdict.verify_s >= 0
    verdict, _ = process_round(state, _req(2, [4, 5]))  # drafting resumes right after the burst
    assert (verdict.accepted, verdict.token) == (2, 5) or state.finished
    assert state.generated[:5] == [1, 2, 3, 4, EOS]


def test_burst_stops_at_end_of_sequence_and_respects_the_limit() -> None:
    state = _state(max_new=10)
    verdict, _ = process_round(state, RoundRequest(1, np.zeros(0, dtype=np.int32), burst=9))
    assert verdict.burst_tokens.tolist() == [1, 2, 3, 4, EOS] and state.finished
    state = _state(max_new=2)
    with pytest.raises(ProtocolError) as info:
        process_round(state, RoundRequest(1, np.zeros(0, dtype=np.int32), burst=3))
    assert info.value.code == "generation_limit"


def test_sampled_burst_draws_each_token_from_the_target_row() -> None:
    """Under sampling a burst is target-only decoding: the first token's frequencies match the canonical row."""
    from covspec.spec import canonical_probs, logits_to_probs

    table = bigram_table()
    exact = canonical_probs(logits_to_probs(table[0][None, :], SamplingParams(1.0, 2, 1.0)))[0]
    counts = np.zeros(V)
    runs = 400
    for seed in range(runs):
        state = _state(temperature=1.0)
        state.rng = np.random.default_rng(seed)
        verdict, _ = process_round(state, RoundRequest(1, np.zeros(0, dtype=np.int32), burst=2))
        counts[verdict.burst_tokens[0]] += 1
        assert exact[verdict.burst_tokens[0]] > 0
    freq = counts / runs
    assert np.all(np.abs(freq - exact) <= 5 * np.sqrt(exact * (1 - exact) / runs) + 1 / runs)


def test_compact_sampling_takes_the_residual_form_when_sparse_rows_cost_more() -> None:
    """Without top-k the sparse rows are dense: given the q(x) scalars the edge answers in the dssd form."""
    spec = SessionSpec("p", temperature=1.0, max_new_tokens=10, verify_mode=VerifyMode.COMPACT, seed=0)
    state = TargetState(spec, BigramSequence(bigram_table(), [0]), frozenset({EOS}), np.random.default_rng(0))
    verdict, _ = process_round(state, _req(1, [1, 2], draft_token_probs=np.array([0.9, 0.9])))
    assert not verdict.sparse_rows
    assert verdict.accepted is not None and (verdict.token is not None or verdict.target_row is not None)
    # top_k=2 over 6 tokens: 3 sparse rows (48 B) cost more than one dense row (24 B), 1 sparse row (16 B) less
    verdict, _ = process_round(_state(temperature=1.0), _req(1, [1, 2], draft_token_probs=np.array([0.9, 0.9])))
    assert not verdict.sparse_rows
    verdict, _ = process_round(_state(temperature=1.0), _req(1, [], draft_token_probs=np.zeros(0)))
    assert len(verdict.sparse_rows) == 1
