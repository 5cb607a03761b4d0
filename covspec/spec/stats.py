"""Counters for one run of speculative decoding, with the derived numbers DESIGN.md §2 names.

Plain arithmetic: logging, metrics and JSON are separate sinks that read :meth:`SpecStats.to_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SpecStats"]


@dataclass
class SpecStats:
    """Totals over the rounds of a run.

    ``drafted``: tokens drafted (sum of K). ``accepted``: drafted tokens the target agreed with. ``committed``: tokens
    committed, normally accepted + 1 per round, fewer when generation stops inside a round (end of sequence or
    ``max_new_tokens``). ``rounds`` counts draft rounds; ``bursts`` the rounds in which the target decoded
    ``burst_tokens`` by itself, kept apart so that AAL and α stay about drafting.
    """

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    committed: int = 0
    bursts: int = 0
    burst_tokens: int = 0

    def record_round(self, drafted: int, accepted: int, committed: int) -> None:
        """Add one round; requires 0 <= accepted <= drafted and 0 <= committed <= accepted + 1."""
        if drafted < 0 or not 0 <= accepted <= drafted:
            raise ValueError(f"need 0 <= accepted <= drafted, got accepted={accepted}, drafted={drafted}")
        if not 0 <= committed <= accepted + 1:
            raise ValueError(f"need 0 <= committed <= accepted + 1, got committed={committed}, accepted={accepted}")
        self.rounds += 1
        self.drafted += drafted
        self.accepted += accepted
        self.committed += committed

    def record_burst(self, committed: int) -> None:
        """Add one burst round that committed ``committed`` target tokens."""
        if committed < 0:
            raise ValueError(f"need committed >= 0, got {committed}")
        self.bursts += 1
        self.burst_tokens += committed

    def add(self, other: SpecStats) -> None:
        """Add another run's totals (pooling several generations into one count)."""
        self.rounds += other.rounds
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.committed += other.committed
        self.bursts += other.bursts
        self.burst_tokens += other.burst_tokens

    @property
    def exchanges(self) -> int:
        """Round trips to the edge: draft rounds and bursts."""
        return self.rounds + self.bursts

    @property
    def aal(self) -> float:
        """Average acceptance length τ: mean committed tokens per round (0.0 before the first round)."""
        return self.committed / self.rounds if self.rounds else 0.0

    @property
    def acceptance_rate(self) -> float:
        """α: accepted / drafted over the run (0.0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    def to_dict(self) -> dict[str, float | int]:
        """Counters and derived numbers under their DESIGN.md names."""
        return {
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "committed": self.committed,
            "bursts": self.bursts,
            "burst_tokens": self.burst_tokens,
            "aal": self.aal,
            "acceptance_rate": self.acceptance_rate,
        }
