"""The same loop with no network: drafter and target in one process, rounds handed over by a function call.

Comparing it with the device-edge loop over loopback isolates what the transport (HTTP setup, WebSocket frames,
msgpack, the edge's event loop) costs; the drafting and verification code is the very same.
"""

from __future__ import annotations

import time
from typing import Any

from covspec.models.base import LoadedModel
from covspec.protocol import (
    DEVICE_RNG_STREAM,
    RoundRequest,
    SessionSpec,
    Verdict,
    session_rng,
)
from covspec.protocol.modes import resolve_verify_mode
from covspec.runtime_device.drafter import Drafter
from covspec.runtime_device.engines.base import DrafterEngine
from covspec.runtime_device.loop import GenerationConfig, decode_rounds
from covspec.runtime_edge.verifier import TargetState, process_round, start_state
from covspec.spec import SpecStats


class InProcessChannel:
    """Rounds handed to the verifier by a function call: no bytes, no link, the target prefilled before the loop."""

    last_exchange_bytes = (0, 0)

    def __init__(self, state: TargetState) -> None:
        self.state = state

    def exchange(self, request: RoundRequest) -> Verdict:
        return process_round(self.state, request)[0]

    def prefill_wait(self, sent: float) -> float:
        return 0.0

    def reopen(self, committed: list[int], next_round: int) -> None:
        raise RuntimeError("a target in this process never loses its session")


def generate_in_process(
    engine: DrafterEngine, target: LoadedModel, image: Any, prompt: str, config: GenerationConfig
) -> tuple[list[int], SpecStats, float]:
    """(tokens, round stats, seconds from the first prefill to the last commit)."""
    started = time.perf_counter()
    mode = resolve_verify_mode(config.verify_mode)
    spec = SessionSpec(prompt, config.temperature, config.top_k, config.top_p, config.seed, config.max_new_tokens, mode)
    eos = frozenset(target.eos_token_ids)
    select = None
    if config.reduce_target and config.reduction is not None:  # lossy, asked for: the target reads the kept tokens
        select = config.reduction.select
    state = start_state(spec, target.start(image, prompt, select=select), eos)
    drafter = Drafter(
        engine.start(image if engine.accepts_images else None, prompt, config.reduction),
        target.vocab_size,
        config.params,
        session_rng(config.seed, DEVICE_RNG_STREAM),
    )
    tokens, stats = decode_rounds(drafter, InProcessChannel(state), config, set(eos))
    return tokens, stats, time.perf_counter() - started
