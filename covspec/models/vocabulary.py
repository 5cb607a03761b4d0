"""Whether a drafter and a target mean the same thing by each token id: the pairing check across families.

Two models pair when the ids they exchange mean the same thing, whatever their tokenizer files look like (a Qwen2-VL
drafter for a Qwen2.5-VL target, or a text-only Qwen2 LM for either). A :class:`Vocabulary` is what a model's ids
mean: the token text of every id below the width of its logits, which of them are special, and how its chat template
renders a probe request (text only, so a VLM and a text LM compare). ``first_difference`` names the first id (or probe
position) where two disagree; the device refuses such a pair with that message.

Which ids count: the drafter's logits are cut to the target's width before drafting, so every id below the target's
width is one that either side can emit (the target commits it and the drafter must read it back, or the drafter
drafts it and the target must judge it). Ids at or past the target's width are never exchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROBE_PROMPT = "Describe the image in one sentence."


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str | None, ...]  # id -> token text, None where the id has no token (padding rows of the logits)
    special: frozenset[int]  # ids of special tokens
    probe_ids: tuple[int, ...]  # the chat template's rendering of PROBE_PROMPT (no image)

    @property
    def width(self) -> int:
        return len(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "special": sorted(self.special),
            "probe": {"prompt": PROBE_PROMPT, "ids": list(self.probe_ids)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(t is None or isinstance(t, str) for t in tokens):
            raise ValueError("a vocabulary needs 'tokens': a list of strings or nulls")
        probe = data.get("probe") or {}
        return cls(
            tokens=tuple(tokens),
            special=frozenset(int(i) for i in data.get("special", ())),
            probe_ids=tuple(int(i) for i in probe.get("ids", ())),
        )


def vocabulary_of(tokenizer: Any, width: int, probe_ids: Sequence[int]) -> Vocabulary:
    """The vocabulary of a Hugging Face ``tokenizer`` over logits ``width`` wide (ids it lacks are None)."""
    known = min(int(width), len(tokenizer))
    tokens: list[str | None] = [None if t is None else str(t) for t in tokenizer.convert_ids_to_tokens(range(known))]
    tokens += [None] * (int(width) - known)
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", ()) or () if 0 <= int(i) < width}
    for idx, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False) and 0 <= int(idx) < width:
            special.add(int(idx))
    return Vocabulary(tuple(tokens), frozenset(special), tuple(int(i) for i in probe_ids))


def _shown(token: str | None) -> str:
    return "no token" if token is None else repr(token)


def first_difference(drafter: Vocabulary, target: Vocabulary) -> str | None:
    """What first differs between the two vocabularies over the ids either side can emit, or None when they agree."""
    for idx in range(target.width):
        ours = drafter.tokens[idx] if idx < drafter.width else None
        theirs = target.tokens[idx]
        if ours != theirs:
            return f"token id {idx} is {_shown(ours)} for the drafter but {_shown(theirs)} for the target"
        if theirs is not None and (idx in drafter.special) != (idx in target.special):
            which = "the drafter" if idx in drafter.special else "the target"
            return f"token id {idx} ({theirs!r}) is a special token for {which} only"
    return probe_difference(drafter, target)


def probe_difference(drafter: Vocabulary, target: Vocabulary) -> str | None:
    """Where the two chat templates render the probe request differently, or None when they render it alike."""
    ours, theirs = drafter.probe_ids, target.probe_ids
    if ours == theirs:
        return None
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))

    def token(vocab: Vocabulary, ids: tuple[int, ...]) -> str:
        if at >= len(ids):
            return "the end"
        idx = ids[at]
        return f"id {idx} ({_shown(vocab.tokens[idx] if idx < vocab.width else None)})"

    return (
        f"the chat templates render the request differently: at token {at} of {PROBE_PROMPT!r} the drafter has "
        f"{token(drafter, ours)} and the target {token(target, theirs)}"
    )


__all__ = ["PROBE_PROMPT", "Vocabulary", "first_difference", "probe_difference", "vocabulary_of"]
