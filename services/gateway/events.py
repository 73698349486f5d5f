"""Live updates for the page: which salon a message concerns, and the JSON the page needs for it."""

from __future__ import annotations

from typing import Any

from services.gateway.snapshot import ACTIVATION_BY_INTEGRATION, pairing_code_view, qr_view
from services.gateway.wording import activation_error_text
from shared import messages as m


def message_salon_id(msg: m.Message) -> int | None:
    """The salon a message is about: the envelope's, the payload's, or the one in its session id."""
    if msg.salon_id is not None:
        return msg.salon_id
    salon_id = getattr(msg.data, "salon_id", None)
    if isinstance(salon_id, int):
        return salon_id
    session_id = getattr(msg.data, "session_id", None)
    if isinstance(session_id, str):
        try:
            return m.salon_id_from_session(session_id)
        except ValueError:
            return None
    return None


def event_payload(msg: m.Message, salon_id: int) -> dict[str, Any] | None:
    """The JSON sent to the page for a live-update message (None for types the page does not show)."""
    base: dict[str, Any] = {"salon_id": salon_id, "message_id": str(msg.id), "occurred_at": msg.occurred_at.isoformat()}
    data = msg.data
    match msg:
        case m.RegistrationCompleted():
            assert isinstance(data, m.RegistrationCompletedData)
            return {**base, "title": data.title, "integration_status": data.integration_status, "registered": True}
        case m.CompanyEnriched():
            assert isinstance(data, m.CompanyEnrichedData)
            return {**base, "title": data.title}
        case m.QrIssued():
            assert isinstance(data, m.QrIssuedData)
            qr = qr_view(data.payload, data.seq, data.max, data.expires_at, data.attempt_id)
            return {
                **base,
                "session_id": data.session_id,
                "attempt_id": data.attempt_id,
                "qr": qr.model_dump(mode="json"),
            }
        case m.PairingCodeIssued():
            assert isinstance(data, m.PairingCodeIssuedData)
            code = pairing_code_view(data.code, data.expires_at, data.attempt_id)
            return {
                **base,
                "session_id": data.session_id,
                "attempt_id": data.attempt_id,
                "pairing_code": code.model_dump(mode="json"),
            }
        case m.PairingExpired():
            assert isinstance(data, m.PairingExpiredData)
            return {**base, "session_id": data.session_id, "attempt_id": data.attempt_id}
        case m.WhatsAppConnected():
            assert isinstance(data, m.WhatsAppConnectedData)
            return {**base, "session_id": data.session_id, "phone": data.phone}
        case m.WhatsAppDisconnected():
            assert isinstance(data, m.WhatsAppDisconnectedData)
            return {
                **base,
                "session_id": data.session_id,
                "code": data.code,
                "retrying": data.retrying,
                "retry_in_s": data.retry_in_s,
            }
        case m.WhatsAppLoggedOut():
            assert isinstance(data, m.WhatsAppLoggedOutData)
            return {**base, "session_id": data.session_id, "code": data.code}
        case m.ActivationCompleted():
            assert isinstance(data, m.ActivationCompletedData)
            return {**base, "activated_at": data.activated_at.isoformat(), "integration_status": "active"}
        case m.ActivationFailed():
            assert isinstance(data, m.ActivationFailedData)
            return {
                **base,
                "integration_status": "activation_failed",
                "error": activation_error_text(data.status_code, data.reason),
                "permanent": data.permanent,
            }
        case m.IntegrationStatusChanged():
            assert isinstance(data, m.IntegrationStatusChangedData)
            return {
                **base,
                "integration_status": data.status,
                "previous": data.previous,
                "activation_status": ACTIVATION_BY_INTEGRATION.get(data.status),
            }
    return None
