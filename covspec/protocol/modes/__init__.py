"""One object per verify mode (uplink, edge verdict, device resolution, commit check); a new mode is one file."""

from __future__ import annotations

from covspec.protocol.messages import VerifyMode
from covspec.protocol.modes.base import (
    AwaitedCommit,
    DeviceOutcome,
    EdgeDecision,
    ModeRules,
    check_commit,
    target_probs_of,
)
from covspec.protocol.modes.compact import CompactRules
from covspec.protocol.modes.dssd import DssdRules
from covspec.protocol.modes.vanilla import VanillaRules

_RULES: dict[VerifyMode, ModeRules] = {r.mode: r for r in (VanillaRules(), DssdRules(), CompactRules())}


def resolve_verify_mode(mode: VerifyMode) -> VerifyMode:
    """``auto`` is the cheapest lossless exchange, which is what ``compact`` now chooses round by round (ids only
    when greedy; sparse rows or the residual form under sampling, whichever costs less)."""
    return VerifyMode.COMPACT if mode is VerifyMode.AUTO else mode


def mode_rules(mode: VerifyMode) -> ModeRules:
    return _RULES[resolve_verify_mode(mode)]


__all__ = [
    "AwaitedCommit",
    "CompactRules",
    "DeviceOutcome",
    "DssdRules",
    "EdgeDecision",
    "ModeRules",
    "VanillaRules",
    "check_commit",
    "mode_rules",
    "resolve_verify_mode",
    "target_probs_of",
]
