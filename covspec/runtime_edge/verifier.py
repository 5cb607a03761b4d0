"""One round of verification over the target: the edge's half of the loop, free of HTTP and asyncio.

State per session: the target's KV cache holds the prompt and every committed token except the newest one
(``pending``), which is fed at the start of the next round together with the draft block, so one forward gives the
K+1 target rows a round needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from covspec.errors import ProtocolError
from covspec.models.base import ModelSequence
from covspec.protocol import RoundRequest, SessionSpec, Verdict, VerifyMode
from covspec.spec import (
    SamplingParams,
    accept_prefix,
    canonical_probs,
    from_wire_probs,
    logits_to_probs,
    sample_token,
    sparse_from_dense,
    to_wire_probs,
    verify_greedy,
    verify_stochastic,
)


@dataclass
class RoundOutcome:
    """What a processed round did, for metrics."""

    drafted: int
    accepted: int | None  # None while the device decides (compact sampling)
    committed: int
    verify_seconds: float


@dataclass
class TargetState:
    """The edge's view of one generation."""

    spec: SessionSpec
    sequence: ModelSequence
    eos_token_ids: frozenset[int]
    rng: np.random.Generator
    generated: list[int] = field(default_factory=list)
    pending: int | None = None  # committed, not yet in the KV cache
    last_round: int = 0
    last_reply: Verdict | None = None
    awaiting: _AwaitedCommit | None = None
    finished: bool = False

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(self.spec.temperature, self.spec.top_k, self.spec.top_p, self.spec.seed)


@dataclass
class _AwaitedCommit:
    """A verdict the device completes: its draft, where the KV was before it, and what the edge already knows."""

    draft: np.ndarray
    base_length: int
    accepted: int | None  # dssd: known on the edge; compact sampling: decided on the device
    rows: np.ndarray  # [K+1, V] canonical target probabilities, to check the device's token


def process_round(state: TargetState, request: RoundRequest) -> tuple[Verdict, RoundOutcome | None]:
    """Verify ``request`` against the target; a retried round returns the stored verdict and changes nothing."""
    if request.round == state.last_round and state.last_reply is not None:
        return state.last_reply, None
    if request.round <= state.last_round:
        raise ProtocolError(f"round {request.round} is older than round {state.last_round}", code="stale_round")
    if request.round != state.last_round + 1:
        raise ProtocolError(f"round {request.round} arrived; round {state.last_round + 1} is next", code="future_round")
    _check_fields(state, request)
    if state.awaiting is not None:
        _apply_commit(state, request.commit)
        state.applied_commit = request.commit
    elif request.commit is not None and request.commit != state.applied_commit:
        # (an identical commit is a resend after this round failed for another reason: already applied)
        raise ProtocolError("a commit was sent, but the last verdict was the edge's own", code="bad_commit")
    draft = np.asarray(request.draft_tokens, dtype=np.int64)
    if state.finished or len(state.generated) + draft.size + 1 > state.spec.max_new_tokens:
        raise ProtocolError(
            f"{len(state.generated)} tokens generated of max_new_tokens={state.spec.max_new_tokens}; "
            f"a round of {draft.size} drafts may commit {draft.size + 1} more"
            + (" (the generation has ended)" if state.finished else ""),
            code="generation_limit",
        )

    started = time.perf_counter()
    base_length = state.sequence.length
    logits = _target_rows(state, draft)
    verdict, committed = _verify(state, request, draft, logits, base_length)
    elapsed = time.perf_counter() - started

    state.last_round = request.round
    state.last_reply = verdict
    state.applied_commit = None
    if committed is not None:
        _commit(state, draft, base_length, verdict.accepted or 0, committed[-1])
    return verdict, RoundOutcome(int(draft.size), verdict.accepted, len(committed or []), elapsed)


def _check_fields(state: TargetState, request: RoundRequest) -> None:
    mode, greedy = state.spec.verify_mode, state.spec.temperature == 0
    if mode is VerifyMode.VANILLA and request.draft_probs is None:
        raise ProtocolError("vanilla rounds carry the draft rows 'q'", code="malformed_message")
    if mode is VerifyMode.DSSD and not greedy and request.draft_token_probs is None:
        raise ProtocolError("dssd rounds under sampling carry the draft scalars 'x'", code="malformed_message")
    if state.awaiting is not None and request.commit is None:
        raise ProtocolError("this round must carry the commit of the previous verdict", code="bad_commit")


def _target_rows(state: TargetState, draft: np.ndarray) -> np.ndarray:
    """[K+1, V] target logits: row i scores the token at draft position i (row K: the bonus position)."""
    fed = ([state.pending] if state.pending is not None else []) + draft.tolist()
    rows = state.sequence.extend(fed) if fed else np.empty((0, state.sequence.prefill_logits.shape[-1]))
    if state.pending is None:
        rows = np.concatenate([state.sequence.prefill_logits[None, :], rows], axis=0)
    assert rows.shape[0] == draft.size + 1, rows.shape
    return rows


def _verify(
    state: TargetState, request: RoundRequest, draft: np.ndarray, logits: np.ndarray, base_length: int
) -> tuple[Verdict, list[int] | None]:
    """The verdict, and the committed tokens when the edge decides them (None when the device completes it)."""
    n, params, mode = request.round, state.params, state.spec.verify_mode
    if params.is_greedy:
        verdict = verify_greedy(draft, np.argmax(logits, axis=-1))
        return Verdict(n, verdict.accepted, verdict.token), verdict.committed(draft.tolist())
    target_probs = canonical_probs(logits_to_probs(logits, params))
    if mode is VerifyMode.VANILLA:
        draft_probs = from_wire_probs(np.asarray(request.draft_probs, dtype=np.float32))
        verdict = verify_stochastic(draft, draft_probs, target_probs, state.rng)
        return Verdict(n, verdict.accepted, verdict.token), verdict.committed(draft.tolist())
    if mode is VerifyMode.DSSD:
        accepted = accept_prefix(draft, np.asarray(request.draft_token_probs), target_probs, state.rng)
        if accepted == draft.size:
            bonus = sample_token(target_probs[-1], state.rng)
            return Verdict(n, accepted, bonus), draft.tolist() + [bonus]
        state.awaiting = _AwaitedCommit(draft, base_length, accepted, target_probs)
        return Verdict(n, accepted, None, to_wire_probs(target_probs[accepted])), None
    rows = [sparse_from_dense(row) for row in target_probs]
    state.awaiting = _AwaitedCommit(draft, base_length, None, target_probs)
    return Verdict(n, None, None, None, [(r.ids, r.probs) for r in rows]), None


def _apply_commit(state: TargetState, commit: tuple[int, int] | None) -> None:
    """Complete the previous round with the device's outcome, after checking it could have happened."""
    awaited = state.awaiting
    assert awaited is not None and commit is not None
    accepted, token = commit
    if accepted > awaited.draft.size or (awaited.accepted is not None and accepted != awaited.accepted):
        raise ProtocolError(
            f"commit says {accepted} accepted; the verdict allows "
            f"{awaited.accepted if awaited.accepted is not None else f'0..{awaited.draft.size}'}",
            code="bad_commit",
        )
    if awaited.rows[accepted, token] <= 0.0:
        raise ProtocolError(f"token {token} has zero target probability at that position", code="bad_commit")
    state.awaiting = None
    _commit(state, awaited.draft, awaited.base_length, accepted, token)


def _commit(state: TargetState, draft: np.ndarray, base_length: int, accepted: int, token: int) -> None:
    """Append the round's committed tokens and roll the KV cache back to what they account for."""
    fed_pending = 1 if state.pending is not None else 0
    state.sequence.crop(base_length + fed_pending + accepted)
    new_tokens = draft[:accepted].tolist() + [int(token)]
    for tok in new_tokens:
        state.generated.append(int(tok))
        if tok in state.eos_token_ids or len(state.generated) >= state.spec.max_new_tokens:
            state.finished = True
            break
    state.pending = int(token)
