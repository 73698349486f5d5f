"""The sandbox's memory: installs, payments, the calls it received, the webhooks it sent."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.yclients.faults import FaultBook
from sandbox.yclients.ratelimit import SlidingWindowLimiter

MAX_CALLS_KEPT = 10_000
INSTALLED = ("active", "freezed")


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Install:
    """Our app on one salon: ``pending → active ⇄ freezed``, any → ``uninstalled``."""

    salon_id: int
    status: str
    api_key: str | None = None
    webhook_urls: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    channel_available: dict[str, bool] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    payments: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def move(self, status: str, note: str) -> None:
        """Change the status and log why."""
        previous, self.status, self.updated_at = self.status, status, now_iso()
        self.logs.append({"date": self.updated_at, "from": previous, "to": status, "message": note})

    def as_status_data(self, application_id: int) -> dict[str, Any]:
        """``data`` of the install-status endpoint."""
        return {
            "connection_status": {
                "status": self.status,
                "salon_id": self.salon_id,
                "application_id": application_id,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            },
            "logs": list(self.logs),
            "payments": list(self.payments),
        }

    def as_json(self) -> dict[str, Any]:
        """The install for ``GET /__sandbox/installs`` (test infrastructure: includes the api_key)."""
        return {
            "salon_id": self.salon_id,
            "status": self.status,
            "api_key": self.api_key,
            "webhook_urls": list(self.webhook_urls),
            "channels": list(self.channels),
            "channel_available": dict(self.channel_available),
            "payments": list(self.payments),
            "logs": list(self.logs),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class CallRecord:
    """One call received on a YClients endpoint, filled in as it is answered."""

    seq: int
    method: str
    path: str
    endpoint: str
    query: list[list[str]]
    headers: dict[str, str]
    auth_ok: bool
    accept_ok: bool
    body: Any
    at: str = field(default_factory=now_iso)
    status: int | None = None
    delivered: bool = False
    fault: str | None = None
    rate_limited: bool = False

    def as_json(self) -> dict[str, Any]:
        """The record as ``GET /__sandbox/calls`` shows it."""
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "query": self.query,
            "headers": self.headers,
            "auth_ok": self.auth_ok,
            "accept_ok": self.accept_ok,
            "body": self.body,
            "status": self.status,
            "delivered": self.delivered,
            "fault": self.fault,
            "rate_limited": self.rate_limited,
            "at": self.at,
        }


@dataclass
class SandboxState:
    """Everything the sandbox remembers; ``reset`` forgets it all."""

    limiter: SlidingWindowLimiter
    default_limits: tuple[int | None, int | None]
    faults: FaultBook = field(default_factory=FaultBook)
    installs: dict[int, Install] = field(default_factory=dict)
    payments: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=MAX_CALLS_KEPT))
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    _call_seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _payment_seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))

    def next_call_seq(self) -> int:
        """A number for the next recorded call."""
        return next(self._call_seq)

    def next_payment_id(self) -> int:
        """A fresh payment id."""
        return next(self._payment_seq)

    def install(self, salon_id: int) -> Install | None:
        """The install of a salon, if it ever started."""
        return self.installs.get(salon_id)

    def mark_pending(self, salon_id: int) -> None:
        """The admin consented on the marketplace page; an installed app stays as it is."""
        current = self.installs.get(salon_id)
        if current is None:
            self.installs[salon_id] = Install(salon_id=salon_id, status="pending")
        elif current.status == "uninstalled":
            current.move("pending", "consent on the marketplace page")

    def reset(self) -> None:
        """Forget installs, payments, calls, webhooks and faults; restore the default rate limits."""
        self.faults.clear()
        self.installs.clear()
        self.payments.clear()
        self.calls.clear()
        self.webhooks.clear()
        self.limiter.configure(*self.default_limits)
        self.limiter.reset()
