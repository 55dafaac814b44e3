"""Prometheus metrics of one server, in its own registry (several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """Requests, tokens, queue depth, batch size, adapters loaded and latency histograms."""

    def __init__(self, server) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lorakit_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("lorakit_request_latency_seconds", "HTTP request latency (to the last byte)",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("lorakit_time_to_first_token_seconds", "Time from request to first streamed text",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("lorakit_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.completion_tokens = Counter("lorakit_completion_tokens", "Generated tokens of finished requests",
                                         registry=r)
        self.batch_size = Histogram("lorakit_batch_size", "Rows in the running batch per engine step",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.step_seconds = Histogram("lorakit_engine_step_seconds", "Duration of one engine step",
                                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5), registry=r)
        queue = Gauge("lorakit_queue_depth", "Requests waiting to join the batch", registry=r)
        loaded = Gauge("lorakit_adapters_loaded", "Adapters resident in the bank", registry=r)
        evictions = Gauge("lorakit_adapter_evictions", "Adapters evicted (least recently used) so far", registry=r)
        engine = server.engine
        queue.set_function(lambda: engine.queue_depth if engine is not None else 0)
        loaded.set_function(lambda: len(server.bank))
        evictions.set_function(lambda: server.bank.evictions)
        if engine is not None:
            engine.on_step = self.on_step

    def on_step(self, batch_size: int, seconds: float) -> None:
        """Called by the engine after each step."""
        self.batch_size.observe(batch_size)
        self.step_seconds.observe(seconds)

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Called by the guard after each HTTP request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        """Count the tokens of a finished request."""
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
