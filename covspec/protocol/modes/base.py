"""What every verify mode is made of: its uplink, the edge's verdict, the device's resolution, the commit check.

A mode is one object (``ModeRules``); the verdict *forms* several modes share live here as functions:

- decided: the edge knows the outcome (``accepted``, ``token``); nothing comes back up;
- residual: the edge knows ``accepted`` from the draft scalars q(x); after a rejection it sends that one target row
  and the device samples the correction (``dssd``);
- sparse rows: the edge sends the K+1 target rows in sparse form; the device verifies (``compact`` under sampling).

A form the device completes is reported as the next round's ``commit``, which the edge checks against what it sent
(``check_commit``) before applying.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from covspec.errors import EdgeError, ProtocolError
from covspec.protocol.messages import RoundRequest, Verdict, VerifyMode
from covspec.spec import (
    SamplingParams,
    SparseProbs,
    accept_prefix,
    canonical_probs,
    dense_from_sparse,
    from_wire_probs,
    logits_to_probs,
    sample_residual,
    sample_token,
    sparse_from_dense,
    to_wire_probs,
    verify_greedy,
    verify_stochastic,
)


@dataclass(frozen=True)
class AwaitedCommit:
    """A verdict the device completes: its draft, what the edge already knows, and the target rows to check it by."""

    draft: np.ndarray  # [K] int64
    accepted: int | None  # residual form: known on the edge; sparse form: decided on the device
    target_probs: np.ndarray  # [K+1, V] canonical target probabilities


@dataclass(frozen=True)
class EdgeDecision:
    """The edge's side of a round: the verdict to send, and either the committed tokens or what it awaits."""

    verdict: Verdict
    committed: list[int] | None  # None: the device completes the round (``awaited`` says how)
    awaited: AwaitedCommit | None = None


@dataclass(frozen=True)
class DeviceOutcome:
    """The device's side of a round: how many drafts were accepted, the last committed token, and the commit to
    report with the next round (None when the edge decided)."""

    accepted: int
    token: int
    commit: tuple[int, int] | None


class ModeRules(abc.ABC):
    """One verify mode, both halves. Greedy rounds are decided on the edge in every mode."""

    mode: VerifyMode

    @abc.abstractmethod
    def request(
        self,
        round_no: int,
        draft: list[int],
        draft_probs: np.ndarray,
        commit: tuple[int, int] | None,
        params: SamplingParams,
    ) -> RoundRequest:
        """Device: the uplink of a draft block. draft_probs: [K, V] canonical rows the drafts were drawn from."""

    def check_request(self, request: RoundRequest, params: SamplingParams) -> None:
        """Edge: refuse a round without the fields this mode needs (``malformed_message``); none by default."""
        return None

    @abc.abstractmethod
    def decide(
        self,
        round_no: int,
        draft: np.ndarray,
        target_logits: np.ndarray,
        request: RoundRequest,
        params: SamplingParams,
        rng: np.random.Generator,
    ) -> EdgeDecision:
        """Edge: the verdict on ``draft`` ([K] int64) from the target's logits ([K+1, V])."""

    def resolve(
        self, verdict: Verdict, draft: list[int], draft_probs: np.ndarray, rng: np.random.Generator
    ) -> DeviceOutcome:
        """Device: apply a verdict of any form this mode sends."""
        if verdict.accepted is not None and verdict.token is not None:
            if verdict.accepted > len(draft):
                raise EdgeError(
                    f"verdict of round {verdict.round} accepts {verdict.accepted} of {len(draft)} drafts",
                    code="malformed_message",
                )
            return DeviceOutcome(verdict.accepted, verdict.token, None)
        if verdict.accepted is not None and verdict.target_row is not None:
            return resolve_residual(verdict, draft_probs, rng)
        if verdict.sparse_rows and len(verdict.sparse_rows) == len(draft) + 1:
            return resolve_sparse(verdict, draft, draft_probs, rng)
        raise EdgeError(
            f"verdict of round {verdict.round} carries nothing this device can apply", code="malformed_message"
        )


# ---- forms shared by the modes --------------------------------------------------------------------------------------


def target_probs_of(target_logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """[K+1, V] canonical target rows: what both sides test and sample against."""
    return canonical_probs(logits_to_probs(target_logits, params))


def decide_greedy(round_no: int, draft: np.ndarray, target_logits: np.ndarray) -> EdgeDecision:
    verdict = verify_greedy(draft, np.argmax(target_logits, axis=-1))
    return EdgeDecision(Verdict(round_no, verdict.accepted, verdict.token), verdict.committed(draft.tolist()))


def decide_stochastic(
    round_no: int, draft: np.ndarray, draft_probs: np.ndarray, target_probs: np.ndarray, rng: np.random.Generator
) -> EdgeDecision:
    verdict = verify_stochastic(draft, draft_probs, target_probs, rng)
    return EdgeDecision(Verdict(round_no, verdict.accepted, verdict.token), verdict.committed(draft.tolist()))


def decide_residual(
    round_no: int,
    draft: np.ndarray,
    draft_token_probs: np.ndarray,
    target_probs: np.ndarray,
    rng: np.random.Generator,
) -> EdgeDecision:
    """The residual form: accept on q(x) scalars; full acceptance draws the bonus here, a rejection sends one row."""
    accepted = accept_prefix(draft, draft_token_probs, target_probs, rng)
    if accepted == draft.size:
        bonus = sample_token(target_probs[-1], rng)
        return EdgeDecision(Verdict(round_no, accepted, bonus), draft.tolist() + [bonus])
    awaited = AwaitedCommit(draft, accepted, target_probs)
    return EdgeDecision(Verdict(round_no, accepted, None, to_wire_probs(target_probs[accepted])), None, awaited)


def decide_sparse(round_no: int, draft: np.ndarray, target_probs: np.ndarray) -> EdgeDecision:
    """The sparse-rows form: the K+1 target rows down (their support only); the device verifies."""
    rows = [sparse_from_dense(row) for row in target_probs]
    verdict = Verdict(round_no, None, None, None, [(r.ids, r.probs) for r in rows])
    return EdgeDecision(verdict, None, AwaitedCommit(draft, None, target_probs))


def resolve_residual(verdict: Verdict, draft_probs: np.ndarray, rng: np.random.Generator) -> DeviceOutcome:
    accepted = int(verdict.accepted or 0)
    if accepted >= draft_probs.shape[0]:
        raise EdgeError(
            f"verdict of round {verdict.round} rejects position {accepted} of a {draft_probs.shape[0]}-token draft",
            code="malformed_message",
        )
    target_row = from_wire_probs(np.asarray(verdict.target_row, dtype=np.float32))
    token = sample_residual(target_row, draft_probs[accepted], rng)
    return DeviceOutcome(accepted, token, (accepted, token))


def resolve_sparse(
    verdict: Verdict, draft: list[int], draft_probs: np.ndarray, rng: np.random.Generator
) -> DeviceOutcome:
    vocab = draft_probs.shape[1]
    target = np.stack([dense_from_sparse(SparseProbs(i, p), vocab) for i, p in verdict.sparse_rows])
    outcome = verify_stochastic(np.asarray(draft, dtype=np.int64), draft_probs, target, rng)
    return DeviceOutcome(outcome.accepted, outcome.token, (outcome.accepted, outcome.token))


def sparse_row_bytes(target_probs: np.ndarray) -> int:
    """Downlink bytes of the sparse-rows form: an int32 id and a float32 probability per support entry."""
    return int(np.count_nonzero(target_probs)) * 8


def check_commit(awaited: AwaitedCommit, commit: tuple[int, int]) -> None:
    """Edge: the device's outcome must be one the verdict allowed, with a token of non-zero target probability."""
    accepted, token = commit
    if accepted > awaited.draft.size or (awaited.accepted is not None and accepted != awaited.accepted):
        allowed = awaited.accepted if awaited.accepted is not None else f"0..{awaited.draft.size}"
        raise ProtocolError(f"commit says {accepted} accepted; the verdict allows {allowed}", code="bad_commit")
    if awaited.target_probs[accepted, token] <= 0.0:
        raise ProtocolError(f"token {token} has zero target probability at that position", code="bad_commit")


def malformed(message: str) -> ProtocolError:
    return ProtocolError(message, code="malformed_message")
