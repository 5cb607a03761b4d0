"""Options the demo and benchmark commands share: the demo drafter's engine and link presets, checked at parse."""

from __future__ import annotations

import enum

import typer

from covspec.profile.energy.estimate import PROFILES as _POWER
from covspec.profile.energy.radio import PROFILES as _RADIO

POWER_PROFILES = ", ".join(_POWER)  # for help texts: the estimate's power profiles (docs/energy.md)
RADIOS = ", ".join(_RADIO)  # the radio models


class DemoEngine(str, enum.Enum):
    """Where the demo drafter runs: its device bundle on ONNX Runtime (exported on first use), or the checkpoint."""

    ONNXRUNTIME = "onnxruntime"
    TORCH = "torch"


def check_links(names: str | list[str]) -> str | list[str]:
    """A Typer callback: every ``--link`` names a preset of `covspec link`."""
    from covspec.link.presets import link_profile

    for name in [names] if isinstance(names, str) else names:
        try:
            link_profile(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--link") from None
    return names
