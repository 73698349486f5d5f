"""Sandbox-only settings, read from the environment (the shared ones come from ``shared.config``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# The platform's documented limit (YCLIENTS.md §4), independent of what our client is configured to use.
DEFAULT_PER_SECOND = 5
DEFAULT_PER_MINUTE = 200
# Longer than any client timeout we configure, so a "timeout" fault is one for every caller.
DEFAULT_HANG_S = 120.0
DEFAULT_SLOW_S = 2.0


@dataclass(frozen=True)
class SandboxOptions:
    """Rate limits, extra plain-http webhook hosts and default fault delays."""

    rate_per_second: int | None = DEFAULT_PER_SECOND
    rate_per_minute: int | None = DEFAULT_PER_MINUTE
    # Hosts (besides loopback) allowed in ``webhook_urls`` over plain http, e.g. ``gateway`` in compose.
    http_webhook_hosts: frozenset[str] = field(default_factory=frozenset)
    hang_s: float = DEFAULT_HANG_S
    slow_s: float = DEFAULT_SLOW_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxOptions:
        """Read ``SANDBOX_RATE_PER_SECOND``, ``SANDBOX_RATE_PER_MINUTE`` (0 = no limit), the rest likewise."""
        env = os.environ if environ is None else environ
        hosts = env.get("SANDBOX_HTTP_WEBHOOK_HOSTS", "")
        return cls(
            rate_per_second=_limit(env.get("SANDBOX_RATE_PER_SECOND"), DEFAULT_PER_SECOND),
            rate_per_minute=_limit(env.get("SANDBOX_RATE_PER_MINUTE"), DEFAULT_PER_MINUTE),
            http_webhook_hosts=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
            hang_s=float(env.get("SANDBOX_HANG_S", DEFAULT_HANG_S)),
            slow_s=float(env.get("SANDBOX_SLOW_S", DEFAULT_SLOW_S)),
        )


def _limit(raw: str | None, default: int) -> int | None:
    if raw is None or not raw.strip():
        return default
    value = int(raw)
    return value if value > 0 else None
