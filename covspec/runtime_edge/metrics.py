"""Prometheus series of one edge server (own registry, so several apps in one process don't collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter("covspec_rounds_total", "Verified rounds", ["verify_mode"], registry=r)
        self.draft_tokens = Counter("covspec_draft_tokens_total", "Draft tokens received", registry=r)
        self.accepted_tokens = Counter("covspec_accepted_tokens_total", "Draft tokens accepted", registry=r)
        self.bursts = Counter("covspec_bursts_total", "Burst rounds (target tokens without a draft)", registry=r)
        self.committed_tokens = Counter("covspec_committed_tokens_total", "Tokens committed by rounds", registry=r)
        self.verify_latency = Histogram(
            "covspec_verify_latency_seconds",
            "Target forward + verification per round",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.prefill_latency = Histogram("covspec_prefill_seconds", "Session prefill time", registry=r)
        self.sessions_active = Gauge("covspec_sessions_active", "Sessions held", registry=r)
        self.sessions_created = Counter("covspec_sessions_created_total", "Sessions created", registry=r)
        self.kv_reserved = Gauge("covspec_kv_reserved_bytes", "KV-cache bytes reserved by sessions", registry=r)
        self.errors = Counter("covspec_errors_total", "Errors answered, by code", ["code"], registry=r)
        self.chat_completions = Counter("covspec_chat_completions_total", "OpenAI-compatible completions", registry=r)
        self.chat_tokens = Counter("covspec_chat_completion_tokens_total", "Tokens generated target-only", registry=r)
        self.model_wait_steps = Histogram(
            "covspec_model_wait_steps",
            "Target forwards (batches or prefills) a model job waited through that did not include it, by job kind",
            ["kind"],
            buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_rows = Histogram(
            "covspec_batch_size",
            "Forwards (session rounds, completion tokens) per batched target forward, by schedule",
            ["schedule"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "covspec_batch_tokens",
            "Positions fed per batched target forward",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "covspec_batch_forward_seconds",
            "Seconds of one batched target forward",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.queue_wait = Histogram(
            "covspec_queue_wait_seconds",
            "Seconds a forward waited for its batch, by schedule",
            ["schedule"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.model_busy = Counter(
            "covspec_model_busy_seconds",
            "Seconds the model thread spent running target work: batched forwards (batch) and prefills (prefill)",
            ["work"],
            registry=r,
        )
        self.prefill_batch_size = Histogram(
            "covspec_prefill_batch_size",
            "Prompts prefilled together (one forward where the target's family can, else one each)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.accepted_per_round = Histogram(
            "covspec_accepted_per_round",
            "Draft tokens accepted per round (rounds the edge decides), by verify mode",
            ["verify_mode"],
            buckets=(0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32),
            registry=r,
        )
        self.wire_bytes = Counter("covspec_round_bytes_total", "Round frame payload bytes", ["direction"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
