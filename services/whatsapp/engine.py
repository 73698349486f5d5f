"""The one interface every WhatsApp engine implements (DESIGN §7), and the events it reports.

An engine drives the WhatsApp Web protocol for many sessions of one worker. It never touches
``whatsapp_sessions``: it reports what happened through the sink given to each start call, and the session
runner (services/whatsapp/runner.py) turns those events into state, messages and reconnect decisions.

Credentials go through an :class:`~services.whatsapp.auth_store.AuthStore`; a resume reads them from there, so a
session resumes in any worker process without a new scan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class QrEvent:
    """A QR to show: ``payload`` is ``ref,noise_pub_b64,identity_pub_b64,adv_secret_b64``; ref ``seq`` of ``max``."""

    attempt_id: str
    payload: str
    seq: int
    max: int
    expires_at: datetime


@dataclass(frozen=True)
class PairingCodeEvent:
    """An 8-character code to type on the phone, shown as ``ABCD-EFGH``."""

    attempt_id: str
    code: str
    expires_at: datetime


@dataclass(frozen=True)
class PairingExpiredEvent:
    """The refs (or the code) ran out without a scan (WhatsApp's 408 "QR refs attempts ended")."""

    attempt_id: str


@dataclass(frozen=True)
class ConnectedEvent:
    """The session is online as ``phone``."""

    phone: str | None


@dataclass(frozen=True)
class DisconnectedEvent:
    """The stream ended with a WhatsApp disconnect code (515 restart required, 408, 428, 440, 500, 503 ...)."""

    code: int
    reason: str = ""


@dataclass(frozen=True)
class LoggedOutEvent:
    """WhatsApp logged the device out (401: removed on the phone, 403: banned)."""

    code: int
    reason: str = ""


@dataclass(frozen=True)
class UnreachableEvent:
    """The engine could not reach WhatsApp at all (DNS, network, the emulator's server down)."""

    reason: str


EngineEvent = (
    QrEvent
    | PairingCodeEvent
    | PairingExpiredEvent
    | ConnectedEvent
    | DisconnectedEvent
    | LoggedOutEvent
    | UnreachableEvent
)
# Called from the engine's own tasks (or a library's callback, on the event loop); must not block.
EventSink = Callable[[EngineEvent], None]


class NoCredentials(Exception):
    """A resume was asked for a session that has no stored credentials (of this engine)."""


class AbstractWhatsAppEngine(ABC):
    """Start pairing (QR or phone), resume, pause, logout, close — for many sessions, events through a sink.

    Calls for one session come from that session's runner one at a time. Starting anything for a session first
    ends what the engine was doing for it, so at most one connection per session is open in a process.
    """

    name: ClassVar[str]

    @abstractmethod
    async def start_qr_pairing(self, session_id: str, attempt_id: str, sink: EventSink) -> None:
        """Open a fresh connection without credentials and report a QR per ref until scanned or expired."""

    @abstractmethod
    async def start_phone_pairing(self, session_id: str, attempt_id: str, phone: str, sink: EventSink) -> None:
        """Open a fresh connection and report a pairing code for ``phone`` (digits with country code)."""

    @abstractmethod
    async def resume(self, session_id: str, sink: EventSink) -> None:
        """Connect with the stored credentials (raises :class:`NoCredentials` when there are none)."""

    @abstractmethod
    async def pause(self, session_id: str) -> None:
        """Close the session's connection (if any) and keep its credentials; idempotent."""

    @abstractmethod
    async def logout(self, session_id: str) -> None:
        """Unlink the device from the account (best effort) and close; the caller wipes the stored credentials."""

    async def forget(self, session_id: str, db: AsyncSession) -> None:  # noqa: B027 (an optional hook)
        """Delete engine-specific stored state inside the caller's wiping transaction (default: nothing)."""

    def is_live(self, session_id: str) -> bool:
        """True while the session has an open, connected connection in this process."""
        return False

    @abstractmethod
    async def close(self) -> None:
        """Close every connection of this process (shutdown); credentials are kept."""
