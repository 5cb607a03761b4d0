"""`covspec bench pareto`'s settings, apart from the sweep so that the CLI reads its flag defaults without importing
the benchmark's machinery (the edge server, ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass

from covspec.link.presets import link_profile
from covspec.profile.energy.objective import power_profile
from covspec.profile.energy.radio import radio_profile


@dataclass(frozen=True)
class ParetoSettings:
    """`covspec bench pareto` flags, one to one; the CLI reads its defaults from here."""

    links: tuple[str, ...] = ("loopback", "wifi", "lte")
    questions: int = 60
    power_profile: str = "orin-nano-15w"
    radio: str = "wifi"
    quick: bool = False  # three points, one question, one warm-up question: a smoke run

    def __post_init__(self) -> None:
        if not self.links:
            raise ValueError("--links needs at least one link preset")
        if len(set(self.links)) != len(self.links):
            raise ValueError(f"--links names a preset twice: {', '.join(self.links)}")
        for name in self.links:
            link_profile(name)  # ValueError naming the presets
        if self.questions < 1:
            raise ValueError("--questions must be at least 1")
        power_profile(self.power_profile)  # ConfigError naming the profiles
        radio_profile(self.radio)


__all__ = ["ParetoSettings"]
