"""The pairing file `covspec pair` writes and `covspec run --pairing` reads: which drafter and target it was measured
for, what was checked and measured, and the settings it recommends per link condition (docs/pairing.md).

JSON, versioned by ``format``; keys only grow within a format. ``run`` refuses a file whose drafter or target is not
the pair in use (names and tokenizer hashes), so that numbers measured on one pair never steer another.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from covspec.errors import ConfigError
from covspec.models.base import ModelFingerprint
from covspec.protocol import VerifyMode
from covspec.runtime_device.loop import GenerationConfig
from covspec.spec.cost_model import EnergyInputs
from covspec.spec.policy import PolicyKind, WarmStart

FORMAT = 1
MEASURED = "measured"  # the name of the link `covspec pair` itself ran over


@dataclass(frozen=True)
class Identity:
    """One side of the pair as its fingerprint names it."""

    name: str
    tokenizer_hash: str
    family: str = ""

    @classmethod
    def of(cls, fingerprint: ModelFingerprint) -> Identity:
        return cls(fingerprint.name, fingerprint.tokenizer_hash, fingerprint.family)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Identity:
        """The target as an edge's ``/v1/info`` names it."""
        model = info.get("model", {})
        return cls(str(model.get("name", "")), str(model.get("tokenizer_hash", "")), str(model.get("family", "")))


@dataclass(frozen=True)
class LinkChoice:
    """The recommendation for one link condition: its numbers, the draft length the cost model rates best on them,
    and what that is expected to give against the target alone through the same link."""

    rtt_s: float  # round trip with the per-round overheads, as the cost policy counts it
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    draft_len: int  # the best K by the cost model (the cost policy's largest K)
    expected_tokens_per_s: float  # repeating rounds of draft_len
    target_only_tokens_per_s: float  # the target alone decoding the calibration's mean answer through this link
    expected_speedup: float
    drafting_pays: bool  # the speedup beats the cost policy's margin; otherwise it is expected to burst

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkChoice:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Pairing:
    """What a pairing file holds (``format`` 1)."""

    drafter: Identity
    target: Identity
    edge_url: str
    checks: tuple[str, ...]
    verify_mode: VerifyMode
    policy: PolicyKind
    max_burst: int
    warm: WarmStart  # its rtt_s is the measured link's; :meth:`warm_for` swaps in another link's
    links: dict[str, LinkChoice]  # MEASURED, and each link preset
    measured_link: str = MEASURED  # the preset `covspec pair --link` ran through, or MEASURED for the direct link
    energy: EnergyInputs | None = None
    measurements: dict[str, Any] = field(default_factory=dict)  # link, drafter steps, verify line, acceptance, runs

    def __post_init__(self) -> None:
        if MEASURED not in self.links:
            raise ConfigError(f"a pairing needs the recommendation for the measured link ({MEASURED!r})")

    # ---- the file --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "drafter": asdict(self.drafter),
            "target": asdict(self.target),
            "edge_url": self.edge_url,
            "checks": list(self.checks),
            "recommendation": {
                "verify_mode": self.verify_mode.value,
                "policy": self.policy.value,
                "max_burst": self.max_burst,
                "measured_link": self.measured_link,
                "links": {name: asdict(choice) for name, choice in self.links.items()},
                "warm_start": {**asdict(self.warm), "accept_probs": list(self.warm.accept_probs)},
            },
            "energy": asdict(self.energy) if self.energy is not None else None,
            "measurements": self.measurements,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pairing:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"not a pairing file of format {FORMAT} (found format {found!r}); run `covspec pair`")
        try:
            rec = data["recommendation"]
            warm = dict(rec["warm_start"])
            warm["accept_probs"] = tuple(float(a) for a in warm["accept_probs"])
            return cls(
                drafter=Identity(**data["drafter"]),
                target=Identity(**data["target"]),
                edge_url=str(data["edge_url"]),
                checks=tuple(data["checks"]),
                verify_mode=VerifyMode(rec["verify_mode"]),
                policy=PolicyKind(rec["policy"]),
                max_burst=int(rec["max_burst"]),
                warm=WarmStart(**warm),
                links={name: LinkChoice.from_dict(c) for name, c in rec["links"].items()},
                measured_link=str(rec.get("measured_link", MEASURED)),
                energy=EnergyInputs(**data["energy"]) if data.get("energy") else None,
                measurements=dict(data.get("measurements") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the pairing file is malformed: {type(exc).__name__}: {exc}") from None

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> Pairing:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the pairing file {path}: {exc}") from None
        return cls.from_dict(data)

    # ---- what `run` uses -------------------------------------------------------------------------------------------
    def check_identity(self, drafter: ModelFingerprint, target_info: dict[str, Any]) -> None:
        """Refuse this file for another pair: the drafter's and the target's names and tokenizer hashes must be the
        ones it was measured for (the first difference is named)."""
        target = Identity.from_info(target_info)
        sides = (("drafter", self.drafter, Identity.of(drafter)), ("target", self.target, target))
        for side, recorded, actual in sides:
            for what in ("name", "tokenizer_hash"):
                if getattr(recorded, what) != getattr(actual, what):
                    raise ConfigError(
                        f"the pairing file was measured for another {side}: its {what} is "
                        f"{getattr(recorded, what)!r} there, {getattr(actual, what)!r} here; run `covspec pair` again"
                    )

    def link_for(self, link: str | None) -> tuple[str, LinkChoice]:
        """The recommendation for ``link`` (a preset name), or for the measured link when None or not listed."""
        if link is not None and link in self.links:
            return link, self.links[link]
        return MEASURED, self.links[MEASURED]

    def warm_for(self, link: str | None) -> WarmStart:
        """The warm start with the round trip of ``link`` (as :meth:`link_for` picks it)."""
        return replace(self.warm, rtt_s=self.link_for(link)[1].rtt_s)

    def apply(
        self,
        config: GenerationConfig,
        drafter: ModelFingerprint,
        target_info: dict[str, Any],
        link: str | None = None,
        explicit: frozenset[str] | set[str] = frozenset(),
    ) -> tuple[GenerationConfig, dict[str, Any]]:
        """``config`` with this file's settings for ``link``, except the fields named in ``explicit`` (given on the
        command line: they win), after :meth:`check_identity`. Also returns what was applied, for the run's stats:
        ``{"pairing": ..., "link": ..., "set": {field: value}, "kept": [fields]}``."""
        self.check_identity(drafter, target_info)
        name, _ = self.link_for(link)
        chosen = {k: v for k, v in self.settings(link).items() if k not in explicit}
        shown = {k: (v.value if hasattr(v, "value") else asdict(v) if k in ("warm", "energy") else v)
                 for k, v in chosen.items()}  # fmt: skip
        kept = sorted(k for k in self.settings(link) if k in explicit)
        return replace(config, **chosen), {"link": name, "set": shown, "kept": kept}

    def settings(self, link: str | None) -> dict[str, Any]:
        """The ``GenerationConfig`` fields this file sets for ``link``."""
        _, choice = self.link_for(link)
        fields = {
            "verify_mode": self.verify_mode,
            "policy": self.policy,
            "draft_len": choice.draft_len,
            "max_burst": self.max_burst,
            "warm": self.warm_for(link),
        }
        if self.energy is not None:
            fields["energy"] = self.energy
        return fields


__all__ = ["FORMAT", "MEASURED", "Identity", "LinkChoice", "Pairing"]
