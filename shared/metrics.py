"""Prometheus metrics shared by every service."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

MESSAGES = Counter("marketplace_messages_total", "Messages handled by a consumer", ["queue", "type", "outcome"])
HANDLER_SECONDS = Histogram("marketplace_handler_seconds", "Time spent in a message handler", ["queue", "type"])
PUBLISHED = Counter("marketplace_published_total", "Messages published with a confirm", ["routing_key"])
HTTP_REQUESTS = Counter("marketplace_http_requests_total", "HTTP requests answered", ["route", "status"])
YCLIENTS_CALLS = Counter("marketplace_yclients_calls_total", "Calls to YClients", ["endpoint", "status"])
BATCH_SIZE = Histogram(
    "marketplace_batch_size", "Messages applied together in one micro-batch", ["type"], buckets=(1, 2, 4, 8, 16, 32, 64)
)

_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Counter | Histogram, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: a hot path then pays one dict lookup instead of the metric's lock."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children.setdefault(key, metric.labels(*values))
    return child
