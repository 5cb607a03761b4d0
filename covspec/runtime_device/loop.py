"""The device loop: open a session on the edge, draft, send, apply verdicts, until EOS or max_new_tokens.

The target decides every committed token: greedy and vanilla/dssd-bonus verdicts come from the edge; a dssd
rejection and compact sampling are completed here with the spec math and reported in the next round's ``commit``.
"""

from __future__ import annotations

import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from covspec.errors import CovspecError, IncompatiblePairError
from covspec.protocol import (
    DEVICE_RNG_STREAM,
    PROTOCOL_VERSION,
    RoundRequest,
    SessionSpec,
    Verdict,
    VerifyMode,
    session_rng,
)
from covspec.runtime_device.client import EdgeClient, EdgeError
from covspec.runtime_device.drafter import Drafter
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.spec import (
    SamplingParams,
    SparseProbs,
    SpecStats,
    dense_from_sparse,
    from_wire_probs,
    sample_residual,
    to_wire_probs,
    verify_stochastic,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    draft_len: int = 4
    verify_mode: VerifyMode = VerifyMode.COMPACT

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": list(self.tokens), "stats": dict(self.stats)}


def check_pair(engine: DrafterEngine, info: dict[str, Any]) -> int:
    """Refuse a drafter whose tokenizer is not the target's; returns the target's vocabulary size."""
    if info.get("protocol_version") != PROTOCOL_VERSION:
        raise IncompatiblePairError(
            f"edge speaks protocol {info.get('protocol_version')}, this device {PROTOCOL_VERSION}"
        )
    target = info.get("model", {})
    drafter = engine.fingerprint
    if target.get("tokenizer_hash") != drafter.tokenizer_hash:
        raise IncompatiblePairError(
            f"drafter {drafter.name} and target {target.get('name')} do not share a tokenizer "
            f"({drafter.tokenizer_hash[:12]} vs {str(target.get('tokenizer_hash'))[:12]})"
        )
    return int(target["vocab_size"])


def generate(
    engine: DrafterEngine,
    client: EdgeClient,
    image_bytes: bytes,
    prompt: str,
    config: GenerationConfig,
) -> GenerationResult:
    """One lossless generation over the link; raises ``EdgeError``/``EdgeUnavailableError`` when it cannot finish."""
    params = config.params
    params.validate()
    if config.draft_len < 0:
        raise ValueError("draft_len must be >= 0")
    vocab_size = check_pair(engine, client.info())
    counter = client.counter
    setup_before = (counter.sent["setup"], counter.received["setup"])
    rounds_before = (counter.sent["rounds"], counter.received["rounds"])

    started = time.perf_counter()
    spec = SessionSpec(
        prompt, config.temperature, config.top_k, config.top_p, config.seed, config.max_new_tokens, config.verify_mode
    )
    image = _decode_image(image_bytes) if engine.accepts_images else None
    # The drafter's prefill runs while the edge prefills the target: setup costs the slower of the two, not both.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="covspec-drafter-prefill") as pool:
        drafter_prefill = pool.submit(engine.start, image, prompt)
        session = client.open_session(spec, image_bytes)
        sequence = drafter_prefill.result()
    drafter = Drafter(sequence, vocab_size, params, session_rng(config.seed, DEVICE_RNG_STREAM))
    channel = client.rounds(session["session_id"], vocab_size)
    try:
        tokens, stats = decode_rounds(drafter, channel, config, set(engine.fingerprint.eos_token_ids))
    finally:
        channel.close()
    elapsed = time.perf_counter() - started
    try:
        client.delete_session(session["session_id"])
    except CovspecError as exc:  # the output is complete; a session left behind only costs the edge a TTL
        log.warning("could not delete session: %s", exc)
    sent_setup = counter.sent["setup"] - setup_before[0]
    received_setup = counter.received["setup"] - setup_before[1]
    uplink = counter.sent["rounds"] - rounds_before[0]
    downlink = counter.received["rounds"] - rounds_before[1]
    n = len(tokens)
    result_stats = {
        "generated_tokens": n,
        "rounds": stats.rounds,
        "aal": stats.aal,
        "acceptance_rate": stats.acceptance_rate,
        "tokens_per_s": n / elapsed if elapsed > 0 else 0.0,
        "uplink_bytes": uplink,
        "downlink_bytes": downlink,
        "setup_uplink_bytes": sent_setup,
        "setup_downlink_bytes": received_setup,
        "uplink_bytes_per_token": uplink / n if n else 0.0,
        "downlink_bytes_per_token": downlink / n if n else 0.0,
        "draft_len": config.draft_len,
        "verify_mode": config.verify_mode.value,
        "wall_s": elapsed,
        "reconnects": channel.reconnects,
    }
    return GenerationResult(engine.decode(tokens), tokens, result_stats)


def generate_target_only(
    client: EdgeClient, image_bytes: bytes, prompt: str, config: GenerationConfig
) -> GenerationResult:
    """The baseline: the target alone through the edge's chat completions, over the same link. Its request (image,
    prompt) counts as setup uplink, its response as downlink; nothing goes up per token."""
    import base64

    counter = client.counter
    sent, received = counter.sent["setup"], counter.received["setup"]
    uri = "data:image/png;base64," + base64.b64encode(image_bytes).decode()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}],
            }
        ],
        "max_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p,
        "seed": config.seed,
    }
    started = time.perf_counter()
    reply = client.chat_completion(body)
    elapsed = time.perf_counter() - started
    tokens = list(reply.get("covspec", {}).get("token_ids", []))
    uplink, downlink = counter.sent["setup"] - sent, counter.received["setup"] - received
    n = len(tokens)
    stats = {
        "generated_tokens": n,
        "rounds": 0,
        "aal": None,
        "acceptance_rate": None,
        "tokens_per_s": n / elapsed if elapsed > 0 else 0.0,
        "uplink_bytes": 0,
        "downlink_bytes": downlink,
        "setup_uplink_bytes": uplink,
        "setup_downlink_bytes": 0,
        "uplink_bytes_per_token": 0.0,
        "downlink_bytes_per_token": downlink / n if n else 0.0,
        "draft_len": 0,
        "verify_mode": "target_only",
        "wall_s": elapsed,
        "reconnects": 0,
    }
    return GenerationResult(reply["choices"][0]["message"]["content"], tokens, stats)


class RoundExchange(Protocol):
    """Whatever carries a round to the target and brings its verdict back (the WebSocket, or a direct call)."""

    def exchange(self, request: RoundRequest) -> Verdict: ...


def decode_rounds(
    drafter: Drafter, channel: RoundExchange, config: GenerationConfig, eos: set[int]
) -> tuple[list[int], SpecStats]:
    """Rounds until EOS or max_new_tokens: draft K, exchange, apply the verdict on both the tokens and the drafter."""
    params = config.params
    stats = SpecStats()
    tokens: list[int] = []
    commit: tuple[int, int] | None = None
    round_no = 0
    while len(tokens) < config.max_new_tokens and not (tokens and tokens[-1] in eos):
        k = min(config.draft_len, config.max_new_tokens - len(tokens) - 1)
        draft, rows = drafter.draft(k)
        round_no += 1
        verdict = channel.exchange(_round_request(round_no, draft, rows, commit, config.verify_mode, params))
        accepted, token, commit = _resolve(verdict, draft, rows, drafter.rng)
        drafter.commit(draft, accepted, token)
        kept = 0
        for t in draft[:accepted] + [token]:
            tokens.append(t)
            kept += 1
            if t in eos:
                break
        stats.record_round(drafted=k, accepted=accepted, committed=kept)
    return tokens, stats


def _round_request(
    round_no: int,
    draft: list[int],
    rows: np.ndarray,
    commit: tuple[int, int] | None,
    mode: VerifyMode,
    params: SamplingParams,
) -> RoundRequest:
    tokens = np.asarray(draft, dtype=np.int32)
    if mode is VerifyMode.VANILLA:
        return RoundRequest(round_no, tokens, commit, draft_probs=to_wire_probs(rows))
    if mode is VerifyMode.DSSD and not params.is_greedy:
        return RoundRequest(round_no, tokens, commit, draft_token_probs=rows[np.arange(len(draft)), tokens])
    return RoundRequest(round_no, tokens, commit)


def _resolve(
    verdict: Verdict, draft: list[int], rows: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, tuple[int, int] | None]:
    """(accepted, committed last token, commit to report next round or None if the edge decided)."""
    if verdict.accepted is not None and verdict.token is not None:
        return verdict.accepted, verdict.token, None
    if verdict.accepted is not None and verdict.target_row is not None:  # dssd rejection: resample here
        target_row = from_wire_probs(np.asarray(verdict.target_row, dtype=np.float32))
        token = sample_residual(target_row, rows[verdict.accepted], rng)
        return verdict.accepted, token, (verdict.accepted, token)
    if verdict.sparse_rows and len(verdict.sparse_rows) == len(draft) + 1:  # compact sampling: verify here
        vocab = rows.shape[1]
        target = np.stack([dense_from_sparse(SparseProbs(i, p), vocab) for i, p in verdict.sparse_rows])
        outcome = verify_stochastic(np.asarray(draft, dtype=np.int64), rows, target, rng)
        return outcome.accepted, outcome.token, (outcome.accepted, outcome.token)
    raise EdgeError(f"verdict of round {verdict.round} carries nothing this device can apply", code="malformed_message")


def _decode_image(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
