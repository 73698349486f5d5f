"""Gateway tunables that are not deployment settings (tests shorten the timings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayOptions:
    """Timings and limits of the live-update streams and the onboarding page."""

    # An idle proxy closes a silent connection after ~60 s; a comment line every 15 s keeps the stream open.
    heartbeat_s: float = 15.0
    # A full snapshot now and then heals anything a lost event left stale (states without an event of their own).
    snapshot_refresh_s: float = 30.0
    max_streams_per_token: int = 5
    # Events buffered per open page; a page that falls this far behind is dropped and reconnects with a snapshot.
    subscriber_queue_size: int = 64
    # Live updates are disposable (the snapshot has the truth), so the per-instance queue is bounded.
    live_queue_max_length: int = 10_000
    live_queue_message_ttl_ms: int = 60_000
    # What EventSource waits before reconnecting after the stream ended.
    sse_retry_ms: int = 3_000
    # Seconds the "Готово" screen waits before sending the admin back to YClients.
    redirect_after_activation_s: int = 10
    # Seconds a read of the state may take before the page renders without it.
    snapshot_timeout_s: float = 3.0
