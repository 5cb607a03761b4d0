"""One round of verification over the target: the edge's half of the loop, free of HTTP and asyncio.

State per session: the target's KV cache holds the prompt and every committed token except the newest one
(``pending``), which is fed at the start of the next round together with the draft block, so one forward gives the
K+1 target rows a round needs. What a verify mode sends and checks is its ``ModeRules`` object
(``covspec.protocol.modes``); a burst round decodes target tokens here, one step each, as target-only would.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from covspec.errors import ProtocolError
from covspec.models.base import ModelSequence
from covspec.protocol import EDGE_RNG_STREAM, RoundRequest, SessionSpec, Verdict, round_rng, session_rng
from covspec.protocol.modes import AwaitedCommit, ModeRules, check_commit, mode_rules, target_probs_of
from covspec.runtime_edge.steps import Forward, Steps, run_to_end
from covspec.spec import SamplingParams, sample_token


@dataclass
class RoundOutcome:
    """What a processed round did, for metrics; ``settled``: the (drafted, accepted, committed) of the previous round,
    which the device decided and this round's commit reported."""

    drafted: int
    accepted: int | None  # None while the device decides (compact sampling, a dssd rejection), and for a burst
    committed: int
    verify_seconds: float
    burst: bool = False
    settled: tuple[int, int, int] | None = None


@dataclass
class _Awaiting:
    """A verdict the device completes, and where the KV cache stood before its round."""

    commit: AwaitedCommit
    base_length: int


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
    last_request: RoundRequest | None = None  # the last verified round: a resend must carry the same
    awaiting: _Awaiting | None = None
    applied_commit: tuple[int, int] | None = None  # the commit the last (failed) attempt at this round applied
    finished: bool = False
    round_rng: Callable[[int], np.random.Generator] | None = None  # a seeded session's generator per round

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(self.spec.temperature, self.spec.top_k, self.spec.top_p, self.spec.seed)

    @property
    def rules(self) -> ModeRules:
        return mode_rules(self.spec.verify_mode)


def process_round(state: TargetState, request: RoundRequest) -> tuple[Verdict, RoundOutcome | None]:
    """Verify ``request`` against the target; a retried round returns the stored verdict and changes nothing."""
    return run_to_end(round_steps(state, request))


def round_steps(
    state: TargetState, request: RoundRequest, started: float | None = None
) -> Steps[tuple[Verdict, RoundOutcome | None]]:
    """:func:`process_round` as a job for the scheduler: a round asks for one forward (batched with other
    sessions'), a burst for one per token. ``started``: ``perf_counter()`` when the round reached the edge's queue
    (its verify time counts from there)."""
    if request.round == state.last_round and state.last_reply is not None:
        if state.last_request is None or not same_round(request, state.last_request):
            raise ProtocolError(
                f"round {request.round} was verified with other contents; a resend must repeat it exactly",
                code="round_conflict",
            )
        return state.last_reply, None
    if request.round <= state.last_round:
        raise ProtocolError(f"round {request.round} is older than round {state.last_round}", code="stale_round")
    if request.round != state.last_round + 1:
        raise ProtocolError(f"round {request.round} arrived; round {state.last_round + 1} is next", code="future_round")
    if not request.burst:
        state.rules.check_request(request, state.params)
    if state.round_rng is not None:
        state.rng = state.round_rng(request.round)
    # the round's time at the edge: its wait for a batch, the last commit, the batch's forward, this round's commit
    started = time.perf_counter() if started is None else started
    settled = _apply_commit(state, request.commit)
    draft = np.asarray(request.draft_tokens, dtype=np.int64)
    new_tokens = request.burst or draft.size + 1
    if state.finished or len(state.generated) + new_tokens > state.spec.max_new_tokens:
        raise ProtocolError(
            f"{len(state.generated)} tokens generated of max_new_tokens={state.spec.max_new_tokens}; "
            f"this round may commit {new_tokens} more" + (" (the generation has ended)" if state.finished else ""),
            code="generation_limit",
        )

    if request.burst:
        tokens = yield from _burst(state, request.burst)
        elapsed = time.perf_counter() - started
        verdict = Verdict(request.round, burst_tokens=np.asarray(tokens, dtype=np.int32), verify_s=elapsed)
        outcome = RoundOutcome(0, None, len(tokens), elapsed, burst=True, settled=settled)
    else:
        base_length = state.sequence.length
        rows = yield from _target_rows(state, draft)
        decision = state.rules.decide(request.round, draft, rows, request, state.params, state.rng)
        if decision.committed is not None:
            accepted = decision.verdict.accepted or 0
            _commit(state, draft, base_length, accepted, decision.committed[-1])
        else:
            assert decision.awaited is not None
            state.awaiting = _Awaiting(decision.awaited, base_length)
        elapsed = time.perf_counter() - started
        verdict = replace(decision.verdict, verify_s=elapsed)
        committed = len(decision.committed or [])
        outcome = RoundOutcome(int(draft.size), decision.verdict.accepted, committed, elapsed, settled=settled)
    state.last_round = request.round
    state.last_reply = verdict
    state.last_request = request
    state.applied_commit = None
    return verdict, outcome


def same_round(a: RoundRequest, b: RoundRequest) -> bool:
    """Whether ``a`` carries everything ``b`` does: a resend, not a different round under the same number. Compared
    only when a round number comes again, so no round pays for it."""
    if (a.round, a.commit, a.burst) != (b.round, b.commit, b.burst):
        return False
    pairs = (
        (a.draft_tokens, b.draft_tokens),
        (a.draft_probs, b.draft_probs),
        (a.draft_token_probs, b.draft_token_probs),
    )
    return all(x is None and y is None or x is not None and y is not None and np.array_equal(x, y) for x, y in pairs)


def start_state(spec: SessionSpec, sequence: ModelSequence, eos_token_ids: frozenset[int]) -> TargetState:
    """A session's state after its prefill. ``sequence`` holds the prompt and, for a generation continued on a fresh
    session, every token of ``spec.resume_tokens`` but the newest, which is pending; rounds go on numbering from
    ``spec.first_round``, each seeded round drawing from its own generator on both sides."""
    resumed = list(spec.resume_tokens)
    seeded = spec.seed is not None
    return TargetState(
        spec,
        sequence,
        eos_token_ids,
        session_rng(spec.seed, EDGE_RNG_STREAM),
        generated=resumed,
        pending=resumed[-1] if resumed else None,
        last_round=spec.first_round - 1,
        round_rng=functools.partial(round_rng, spec.seed, EDGE_RNG_STREAM) if seeded else None,
    )


def _apply_commit(state: TargetState, commit: tuple[int, int] | None) -> tuple[int, int, int] | None:
    """Complete the previous round with the device's outcome, after checking it could have happened; returns its
    (drafted, accepted, committed), or None when there was nothing to complete."""
    if state.awaiting is None:
        if commit is not None and commit != state.applied_commit:
            # (an identical commit is a resend after this round failed for another reason: already applied)
            raise ProtocolError("a commit was sent, but the last verdict was the edge's own", code="bad_commit")
        return None
    if commit is None:
        raise ProtocolError("this round must carry the commit of the previous verdict", code="bad_commit")
    awaiting = state.awaiting
    check_commit(awaiting.commit, commit)
    state.awaiting = None
    state.applied_commit = commit
    generated = len(state.generated)
    _commit(state, awaiting.commit.draft, awaiting.base_length, commit[0], commit[1])
    return len(awaiting.commit.draft), commit[0], len(state.generated) - generated


def _target_rows(state: TargetState, draft: np.ndarray) -> Steps[np.ndarray]:
    """[K+1, V] target logits: row i scores the token at draft position i (row K: the bonus position)."""
    fed = ([state.pending] if state.pending is not None else []) + draft.tolist()
    rows = (yield Forward(state.sequence, fed)) if fed else np.empty((0, state.sequence.prefill_logits.shape[-1]))
    if state.pending is None:
        rows = np.concatenate([state.sequence.prefill_logits[None, :], rows], axis=0)
    assert rows.shape[0] == draft.size + 1, rows.shape
    return rows


def _burst(state: TargetState, length: int) -> Steps[list[int]]:
    """Decode up to ``length`` tokens with the target alone (greedy argmax, or a sample from the canonical row with
    the edge's stream), committing each; stops early at end of sequence."""
    params, tokens = state.params, []
    empty = np.empty(0, dtype=np.int64)
    for _ in range(length):
        base_length = state.sequence.length
        logits = (yield from _target_rows(state, empty))[0]
        if params.is_greedy:
            token = int(np.argmax(logits))
        else:
            token = sample_token(target_probs_of(logits[None, :], params)[0], state.rng)
        _commit(state, empty, base_length, 0, token)
        tokens.append(token)
        if state.finished:
            break
    return tokens


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
