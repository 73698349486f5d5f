"""What a chaos run records (the operations it sent) and what it observes afterwards (the facts it checks)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Literal

OpKind = Literal["install", "pair", "scan", "activate", "webhook"]
OP_KINDS: tuple[OpKind, ...] = ("install", "pair", "scan", "activate", "webhook")


@dataclass
class Op:
    """One logical operation of the load (an admin's click, a phone scan, a webhook), however often retried."""

    kind: OpKind
    salon_id: int
    event: str | None = None
    attempts: int = 0
    acked: bool = False
    status: int | None = None
    message_id: str | None = None
    error: str | None = None
    synthetic: bool = False
    started_at: float = field(default_factory=time.monotonic)
    acked_at: float | None = None
    # One entry per attempt: wall-clock time (UTC, to match the service logs), where it went, what came back.
    trail: list[str] = field(default_factory=list)

    def attempt(self, target: str, outcome: str) -> None:
        """Record one attempt."""
        self.attempts += 1
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        self.trail.append(f"{stamp} {target} → {outcome}")

    def ack(self, status: int | None, message_id: str | None = None) -> None:
        """The operation was answered with a success (2xx / 302, or a broker confirm)."""
        self.acked = True
        self.status = status
        self.message_id = message_id
        self.acked_at = time.monotonic()

    def describe(self) -> str:
        """A short label for notes and failure messages."""
        what = f"{self.kind} {self.event}" if self.event else self.kind
        tail = f" message {self.message_id}" if self.message_id else ""
        return f"{what} salon {self.salon_id}{tail} ({self.attempts} attempt(s), last status {self.status})"

    def evidence(self) -> str:
        """The description with every attempt (UTC times, to find the service log lines)."""
        return self.describe() + (" [" + "; ".join(self.trail) + "]" if self.trail else "")


@dataclass
class History:
    """Every operation a scenario sent, in order."""

    ops: list[Op] = field(default_factory=list)

    def new(self, kind: OpKind, salon_id: int, *, event: str | None = None, synthetic: bool = False) -> Op:
        """Record a new operation and return it."""
        op = Op(kind=kind, salon_id=salon_id, event=event, synthetic=synthetic)
        self.ops.append(op)
        return op

    @property
    def salon_ids(self) -> set[int]:
        """Every salon the operations touched."""
        return {op.salon_id for op in self.ops}

    def attempts(self) -> int:
        """HTTP requests (or publishes) sent in all, retries included."""
        return sum(op.attempts for op in self.ops)


# ---- observed facts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompanyFacts:
    """A `companies` row as the checks need it."""

    salon_id: int
    status: str
    whatsapp_connected: bool
    api_key_hash: str | None
    enriched: bool
    title: str


@dataclass(frozen=True)
class EventFact:
    """A `marketplace_events` row."""

    salon_id: int
    event_type: str
    message_id: str | None


@dataclass(frozen=True)
class SessionFacts:
    """A `whatsapp_sessions` row."""

    salon_id: int
    state: str
    desired: str


@dataclass(frozen=True)
class CallbackFact:
    """A partner callback the sandbox received, and what it answered."""

    salon_id: int
    status: int | None


@dataclass(frozen=True)
class InstallFacts:
    """The sandbox's install of our app on a salon (the api_key only as its SHA-256)."""

    salon_id: int
    status: str
    api_key_hash: str | None


@dataclass(frozen=True)
class PublishedFact:
    """A message the tap saw on the exchange."""

    message_id: str
    type: str
    salon_id: int | None
    correlation_id: str | None
    status: str | None = None


@dataclass(frozen=True)
class DeadFact:
    """A message parked in a `.dead` queue."""

    queue: str
    salon_id: int | None
    type: str | None
    message_id: str | None
    reason: str


@dataclass
class Observed:
    """Everything the checks read after (or during) the drain."""

    companies: dict[int, CompanyFacts] = field(default_factory=dict)
    events: list[EventFact] = field(default_factory=list)
    sessions: dict[int, SessionFacts] = field(default_factory=dict)
    callbacks: list[CallbackFact] = field(default_factory=list)
    installs: dict[int, InstallFacts] = field(default_factory=dict)
    published: list[PublishedFact] = field(default_factory=list)
    dead: list[DeadFact] = field(default_factory=list)
    outbox_left: int = 0
    queued: int = 0

    def events_of(self, salon_id: int, event_type: str) -> list[EventFact]:
        """The salon's audit rows of one type."""
        return [e for e in self.events if e.salon_id == salon_id and e.event_type == event_type]

    def published_of(self, salon_id: int, msg_type: str, status: str | None = None) -> set[str]:
        """Distinct ids of the salon's messages of one type (and status, for status changes) seen on the tap."""
        return {
            p.message_id
            for p in self.published
            if p.salon_id == salon_id and p.type == msg_type and (status is None or p.status == status)
        }


@dataclass(frozen=True)
class Row:
    """One line of the chaos table."""

    scenario: str
    sent: int
    acknowledged: int
    applied: int
    duplicates: int
    lost: int
    dead_lettered: int
    ok: bool

    HEADERS: ClassVar[tuple[str, ...]] = (
        "scenario",
        "sent",
        "acknowledged",
        "applied",
        "duplicate effects",
        "lost",
        "dead-lettered",
        "result",
    )

    def cells(self) -> tuple[str, ...]:
        """The row as table cells."""
        return (
            self.scenario,
            str(self.sent),
            str(self.acknowledged),
            str(self.applied),
            str(self.duplicates),
            str(self.lost),
            str(self.dead_lettered),
            "ok" if self.ok else "FAIL",
        )
