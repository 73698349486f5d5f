"""The message envelope and the catalog: one frozen model per message type (DESIGN §3).

Commands are imperative (``RequestPairing``), events past tense (``WhatsAppConnected``).
The routing key of a message is its ``type``; ``ROUTING_KEY`` on each class is the one place it is spelled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class Data(BaseModel):
    """Base of every message payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(BaseModel):
    """The envelope shared by every message; subclasses fix ``type`` and ``data``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ROUTING_KEY: ClassVar[str]
    KIND: ClassVar[Literal["command", "event"]]

    id: UUID = Field(default_factory=uuid4)
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str = Field(default_factory=lambda: str(uuid4()))
    salon_id: int | None = None
    data: Data

    def follow_up(self) -> dict[str, Any]:
        """Envelope fields a message caused by this one carries over (correlation, salon)."""
        return {"correlation_id": self.correlation_id, "salon_id": self.salon_id}


# ---- shared payload parts -------------------------------------------------------------------------------


class MarketplaceUser(Data):
    """The YClients user who clicked "Подключить" (every field optional, YCLIENTS.md §1)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str | None = None
    name: str | None = None
    phone: str | None = None
    email: str | None = None


IntegrationStatus = Literal["pending_whatsapp", "activating", "active", "activation_failed", "frozen", "uninstalled"]

# ---- registration ---------------------------------------------------------------------------------------


class RegistrationRequestedData(Data):
    salon_ids: list[int] = Field(min_length=1)
    user: MarketplaceUser | None = None


class RegistrationRequested(Message):
    """Command: register (or re-register) the salons of one install redirect."""

    ROUTING_KEY: ClassVar[str] = "registration.requested"
    KIND: ClassVar[Literal["command", "event"]] = "command"
    type: Literal["registration.requested"] = "registration.requested"
    data: RegistrationRequestedData


class EnrichmentRequestedData(Data):
    salon_id: int


class EnrichmentRequested(Message):
    """Command: fetch the salon's profile from YClients (retried while YClients is down)."""

    ROUTING_KEY: ClassVar[str] = "registration.enrichment_requested"
    KIND: ClassVar[Literal["command", "event"]] = "command"
    type: Literal["registration.enrichment_requested"] = "registration.enrichment_requested"
    data: EnrichmentRequestedData


class RegistrationCompletedData(Data):
    salon_id: int
    company_id: int
    title: str
    integration_status: IntegrationStatus
    enriched: bool


class RegistrationCompleted(Message):
    """Event: the company row exists (enriched or with the fallback title)."""

    ROUTING_KEY: ClassVar[str] = "registration.completed"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["registration.completed"] = "registration.completed"
    data: RegistrationCompletedData


class CompanyEnrichedData(Data):
    salon_id: int
    title: str
    phone: str | None = None
    timezone: str | None = None


class CompanyEnriched(Message):
    """Event: the salon's profile was fetched from YClients after registration."""

    ROUTING_KEY: ClassVar[str] = "registration.enriched"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["registration.enriched"] = "registration.enriched"
    data: CompanyEnrichedData


# ---- whatsapp -------------------------------------------------------------------------------------------


class RequestPairingData(Data):
    session_id: str
    mode: Literal["qr", "phone"] = "qr"
    phone: str | None = None


class RequestPairing(Message):
    """Command: start (or restart) pairing a salon's WhatsApp by QR or by phone number."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.pairing_requested"
    KIND: ClassVar[Literal["command", "event"]] = "command"
    type: Literal["whatsapp.pairing_requested"] = "whatsapp.pairing_requested"
    data: RequestPairingData


class SessionCommandData(Data):
    session_id: str
    reason: str = ""


class RequestPause(Message):
    """Command: pause a session and keep its credentials (salon frozen)."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.pause_requested"
    KIND: ClassVar[Literal["command", "event"]] = "command"
    type: Literal["whatsapp.pause_requested"] = "whatsapp.pause_requested"
    data: SessionCommandData


class RequestLogout(Message):
    """Command: log a session out and wipe its credentials (salon uninstalled)."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.logout_requested"
    KIND: ClassVar[Literal["command", "event"]] = "command"
    type: Literal["whatsapp.logout_requested"] = "whatsapp.logout_requested"
    data: SessionCommandData


class QrIssuedData(Data):
    session_id: str
    attempt_id: str
    payload: str
    seq: int
    max: int
    expires_at: datetime


class QrIssued(Message):
    """Event: a new QR code is valid for the session until ``expires_at``."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.qr_issued"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["whatsapp.qr_issued"] = "whatsapp.qr_issued"
    data: QrIssuedData


class PairingCodeIssuedData(Data):
    session_id: str
    attempt_id: str
    code: str
    expires_at: datetime


class PairingCodeIssued(Message):
    """Event: an 8-character pairing code to type on the phone."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.pairing_code_issued"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["whatsapp.pairing_code_issued"] = "whatsapp.pairing_code_issued"
    data: PairingCodeIssuedData


class PairingExpiredData(Data):
    session_id: str
    attempt_id: str


class PairingExpired(Message):
    """Event: the QR refs (or the pairing code) ran out; the admin must start a new attempt."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.pairing_expired"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["whatsapp.pairing_expired"] = "whatsapp.pairing_expired"
    data: PairingExpiredData


class WhatsAppConnectedData(Data):
    session_id: str
    phone: str | None = None


class WhatsAppConnected(Message):
    """Event: the salon's WhatsApp is linked and online."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.connected"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["whatsapp.connected"] = "whatsapp.connected"
    data: WhatsAppConnectedData


class WhatsAppDisconnectedData(Data):
    session_id: str
    code: int
    reason: str = ""
    retrying: bool
    retry_in_s: float | None = None


class WhatsAppDisconnected(Message):
    """Event: the connection dropped; ``retrying`` tells whether the worker reconnects by itself."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.disconnected"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["whatsapp.disconnected"] = "whatsapp.disconnected"
    data: WhatsAppDisconnectedData


class WhatsAppLoggedOutData(Data):
    session_id: str
    code: int | None = None
    reason: str = ""


class WhatsAppLoggedOut(Message):
    """Event: the session is gone for good (logout, device removed, banned); credentials wiped."""

    ROUTING_KEY: ClassVar[str] = "whatsapp.logged_out"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["whatsapp.logged_out"] = "whatsapp.logged_out"
    data: WhatsAppLoggedOutData


# ---- activation -----------------------------------------------------------------------------------------


class RequestActivationData(Data):
    salon_id: int
    reason: Literal["whatsapp_connected", "manual", "replay"] = "manual"


class RequestActivation(Message):
    """Command: activate the salon on YClients (partner callback)."""

    ROUTING_KEY: ClassVar[str] = "activation.requested"
    KIND: ClassVar[Literal["command", "event"]] = "command"
    type: Literal["activation.requested"] = "activation.requested"
    data: RequestActivationData


class ActivationCompletedData(Data):
    salon_id: int
    activated_at: datetime
    already_installed: bool = False


class ActivationCompleted(Message):
    """Event: YClients accepted the callback; the salon is active."""

    ROUTING_KEY: ClassVar[str] = "activation.completed"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["activation.completed"] = "activation.completed"
    data: ActivationCompletedData


class ActivationFailedData(Data):
    salon_id: int
    reason: str
    status_code: int | None = None
    permanent: bool


class ActivationFailed(Message):
    """Event: activation failed for good (permanent error or retries exhausted)."""

    ROUTING_KEY: ClassVar[str] = "activation.failed"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["activation.failed"] = "activation.failed"
    data: ActivationFailedData


class IntegrationStatusChangedData(Data):
    salon_id: int
    status: IntegrationStatus
    previous: IntegrationStatus | None = None


class IntegrationStatusChanged(Message):
    """Event: the salon's integration status moved (frozen, uninstalled, re-installed, ...)."""

    ROUTING_KEY: ClassVar[str] = "integration.status_changed"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["integration.status_changed"] = "integration.status_changed"
    data: IntegrationStatusChangedData


# ---- YClients webhooks ----------------------------------------------------------------------------------


class WebhookReceivedData(Data):
    salon_id: int
    application_id: int
    event: str
    # The webhook body without ``partner_token`` (secrets never travel in messages).
    body: dict[str, Any] = Field(default_factory=dict)


class YClientsWebhookReceived(Message):
    """Event: YClients sent a lifecycle webhook (uninstall, freeze, payment, ...)."""

    ROUTING_KEY: ClassVar[str] = "yclients.webhook_received"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["yclients.webhook_received"] = "yclients.webhook_received"
    data: WebhookReceivedData


class DataChangedData(Data):
    company_id: int
    resource: str
    resource_id: int | str | None = None
    status: str | None = None
    dedup_key: str
    payload: dict[str, Any] = Field(default_factory=dict)


class YClientsDataChanged(Message):
    """Event: a data webhook (record, client, ...) for the consumers to come (the AI administrator)."""

    ROUTING_KEY: ClassVar[str] = "yclients.data_changed"
    KIND: ClassVar[Literal["command", "event"]] = "event"
    type: Literal["yclients.data_changed"] = "yclients.data_changed"
    data: DataChangedData


# ---- decoding -------------------------------------------------------------------------------------------

ALL_MESSAGES: tuple[type[Message], ...] = (
    RegistrationRequested,
    EnrichmentRequested,
    RegistrationCompleted,
    CompanyEnriched,
    RequestPairing,
    RequestPause,
    RequestLogout,
    QrIssued,
    PairingCodeIssued,
    PairingExpired,
    WhatsAppConnected,
    WhatsAppDisconnected,
    WhatsAppLoggedOut,
    RequestActivation,
    ActivationCompleted,
    ActivationFailed,
    IntegrationStatusChanged,
    YClientsWebhookReceived,
    YClientsDataChanged,
)

AnyMessage = Annotated[
    RegistrationRequested
    | EnrichmentRequested
    | RegistrationCompleted
    | CompanyEnriched
    | RequestPairing
    | RequestPause
    | RequestLogout
    | QrIssued
    | PairingCodeIssued
    | PairingExpired
    | WhatsAppConnected
    | WhatsAppDisconnected
    | WhatsAppLoggedOut
    | RequestActivation
    | ActivationCompleted
    | ActivationFailed
    | IntegrationStatusChanged
    | YClientsWebhookReceived
    | YClientsDataChanged,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[AnyMessage] = TypeAdapter(AnyMessage)
BY_ROUTING_KEY: dict[str, type[Message]] = {m.ROUTING_KEY: m for m in ALL_MESSAGES}


def decode(body: bytes | str) -> Message:
    """Parse a message body into its typed model (raises ``pydantic.ValidationError``)."""
    msg: Message = _adapter.validate_json(body)
    return msg


def encode(msg: Message) -> bytes:
    """Serialise a message to its JSON body."""
    return msg.model_dump_json().encode()


def session_id_for(salon_id: int) -> str:
    """The WhatsApp session id of a salon (fixed point: ``company_<salon_id>``)."""
    return f"company_{salon_id}"


def salon_id_from_session(session_id: str) -> int:
    """The salon id inside a ``company_<salon_id>`` session id (ValueError otherwise)."""
    prefix, _, rest = session_id.partition("_")
    if prefix != "company" or not rest.isdigit():
        raise ValueError(f"not a session id: {session_id!r}")
    return int(rest)
