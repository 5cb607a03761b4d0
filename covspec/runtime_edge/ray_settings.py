"""The replica set of `covspec serve --ray` (`covspec.runtime_edge.ray_serve`), apart from the deployment so the CLI
reads its defaults without importing the edge app or Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass

from covspec.runtime_edge.settings import EdgeSettings


@dataclass(frozen=True)
class RaySettings:
    """The replica set; `covspec serve --ray` flags map onto these fields."""

    replicas: int = 2
    replica_cpus: float = 1.0  # Ray CPUs each replica reserves (its torch threads, unless --threads says otherwise)
    # A device's WebSocket is one request for its whole life: this bounds the devices (plus in-flight HTTP requests)
    # one replica takes; the edge's own max_sessions refuses sessions past capacity before this is reached.
    max_ongoing_requests: int = 256
    app_name: str = "covspec"
    deployment_name: str = "edge"

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.replica_cpus <= 0 or self.max_ongoing_requests < 1:
            raise ValueError("need replicas >= 1, replica_cpus > 0 and max_ongoing_requests >= 1")

    def threads(self, settings: EdgeSettings) -> int:
        """Torch threads per replica: ``settings.threads`` when given, else one per reserved CPU (at least one)."""
        return settings.threads if settings.threads is not None else max(1, int(self.replica_cpus))

    @property
    def cluster_cpus(self) -> int:
        """Logical CPUs the local Ray instance offers: room for every replica (Serve's own actors reserve none)."""
        return math.ceil(self.replicas * self.replica_cpus)
