"""Whether this drafter may draft for the edge's target: the same protocol, ids that mean the same thing, and a chat
template that renders the request alike (``covspec.models.vocabulary``).

Equal tokenizer hashes settle the vocabulary at once; otherwise the target's vocabulary is fetched once per client
(``GET /v1/vocabulary``, megabytes at a real vocabulary) and compared id by id. The refusal names the first difference.

``check_pair`` runs before every generation; ``check_pair_fully`` (`covspec pair`) adds what a deployment checks
once: the end-of-sequence ids each side stops at, the ids of the named special tokens both define, and the image
handling (a drafter that reads images needs a target that does, with the same image placeholder id; a text-only
drafter may draft for a VLM).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from covspec.errors import IncompatiblePairError
from covspec.models.vocabulary import Vocabulary, first_difference, probe_difference
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


def check_pair_fully(engine: DrafterEngine, info: dict[str, Any], client: EdgeClient) -> list[str]:
    """``check_pair`` and the checks above; returns the names of the checks passed, raises
    ``IncompatiblePairError`` naming the first difference ("image token id: drafter 5, target 4")."""
    check_pair(engine, info, client)
    target = info.get("model", {})
    drafter = engine.fingerprint
    ours = engine.vocabulary
    theirs = ours if target.get("tokenizer_hash") == drafter.tokenizer_hash else None
    passed = ["protocol", "vocabulary", "chat template"]

    def refuse(what: str, mine: object, its: object) -> IncompatiblePairError:
        return IncompatiblePairError(f"drafter {drafter.name} and target {target.get('name')} do not pair: "
                                     f"{what}: drafter {mine}, target {its}")  # fmt: skip

    target_eos = sorted(int(t) for t in target.get("eos_token_ids", ()))
    if sorted(drafter.eos_token_ids) != target_eos:
        raise refuse("end-of-sequence token ids", sorted(drafter.eos_token_ids), target_eos)
    passed.append("end-of-sequence ids")
    named = dict(target.get("special_tokens") or {})
    for name in sorted(set(named) & set(drafter.special_tokens)):
        if theirs is None:
            theirs = client.target_vocabulary(str(target.get("tokenizer_hash")))
        mine, its = token_id(ours, drafter.special_tokens[name]), token_id(theirs, named[name])
        if mine != its:
            raise refuse(f"{name.removesuffix('_token')} token id", mine, its)
    passed.append("special token ids")
    target_images = bool(target.get("accepts_images", target.get("image_processor") is not None))
    if engine.accepts_images:
        if not target_images:
            raise refuse("image handling", "reads images", "is text-only")
        its = target.get("image_token_id")  # the target model's own (config); else its tokenizer's placeholder
        if its is None:
            if theirs is None:
                theirs = client.target_vocabulary(str(target.get("tokenizer_hash")))
            its = image_token_id_of(theirs, named)
        mine = image_token_id(engine, ours)
        if mine != its:
            raise refuse("image token id", mine, its)
        passed.append("image handling")
    else:
        passed.append("image handling (text-only drafter)")
    return passed


def token_id(vocabulary: Vocabulary | None, text: str) -> int | None:
    """The id of the token ``text`` in ``vocabulary`` (None when it has none)."""
    if vocabulary is None:
        return None
    try:
        return vocabulary.tokens.index(text)
    except ValueError:
        return None


def image_token_id_of(vocabulary: Vocabulary | None, special_tokens: dict[str, str]) -> int | None:
    text = special_tokens.get("image_token")
    return None if text is None else token_id(vocabulary, text)


def image_token_id(engine: DrafterEngine, vocabulary: Vocabulary) -> int | None:
    """The drafter's image placeholder id: its engine's own (from the model's config), else its tokenizer's."""
    stated = getattr(engine, "image_token_id", None)
    if stated is not None:
        return int(stated)
    return image_token_id_of(vocabulary, engine.fingerprint.special_tokens)


__all__ = ["check_pair", "check_pair_fully", "image_token_id", "image_token_id_of", "token_id"]
