"""Whether this drafter may draft for the edge's target: the same protocol, ids that mean the same thing, and a chat
template that renders the request alike (``covspec.models.vocabulary``).

Equal tokenizer hashes settle the vocabulary at once; otherwise the target's vocabulary is fetched once per client
(``GET /v1/vocabulary``, megabytes at a real vocabulary) and compared id by id. The refusal names the first difference.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from covspec.errors import IncompatiblePairError
from covspec.models.vocabulary import first_difference, probe_difference
from covspec.protocol import PROTOCOL_VERSION
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.engines.base import DrafterEngine


def check_pair(engine: DrafterEngine, info: dict[str, Any], client: EdgeClient) -> int:
    """Refuse a drafter whose ids or chat template differ from the target's; returns the target's vocabulary size."""
    if info.get("protocol_version") != PROTOCOL_VERSION:
        raise IncompatiblePairError(
            f"edge speaks protocol {info.get('protocol_version')}, this device {PROTOCOL_VERSION}"
        )
    target = info.get("model", {})
    drafter = engine.fingerprint
    ours = engine.vocabulary
    if target.get("tokenizer_hash") == drafter.tokenizer_hash:
        probe = target.get("chat_probe")
        difference = None if probe is None else probe_difference(ours, replace(ours, probe_ids=tuple(probe)))
    else:
        difference = first_difference(ours, client.target_vocabulary(str(target.get("tokenizer_hash"))))
    if difference is not None:
        raise IncompatiblePairError(f"drafter {drafter.name} and target {target.get('name')} do not pair: {difference}")
    return int(target["vocab_size"])


__all__ = ["check_pair"]
