"""Lifecycle webhooks from YClients (YCLIENTS.md §5): uninstall, freeze, and whatever else arrives.

Our `integration_status` follows the platform's install state machine (YCLIENTS.md §1):
- `uninstall` — from any status but `uninstalled`: WhatsApp logged out (credentials wiped), api_key revoked,
  `uninstalled`. A re-install later starts from scratch (registration resets the row to `pending_whatsapp`).
- `freeze` — only an installed app can be frozen, so from `active`, or `activating` / `activation_failed`
  (our callback may have landed while its answer did not): WhatsApp paused (credentials kept), `frozen`.
  An activation finishing afterwards leaves the salon `frozen`.
- `payment` (seen in production, fields undocumented) and a manual activation request of a frozen salon:
  the platform unfreezes a paid install (`freezed → active`), so we ask its status endpoint and move
  `frozen → active` only when it says `active`.
- anything else: stored in `marketplace_events` and acknowledged.

Every delivery is a distinct message (YClients may repeat a webhook); each is applied once (processed-message
claim) and its effect is guarded by the status, so a repeated uninstall or freeze changes nothing.
A webhook received before the salon's latest install redirect belongs to the previous install and is only
recorded (it must not uninstall the fresh one).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from services.activation.service import CONSUMER, InstallApi, unfreeze_salon
from services.activation.store import lock_company, registered_after
from shared.db.audit import record_event
from shared.db.models import Company
from shared.db.uow import UnitOfWork
from shared.messages import (
    IntegrationStatusChanged,
    RequestLogout,
    RequestPause,
    YClientsWebhookReceived,
    session_id_for,
)

log = logging.getLogger(__name__)

FREEZABLE = ("active", "activating", "activation_failed")
UNFREEZING_EVENTS = ("payment",)
_EVENT_CHARS = re.compile(r"[^a-z0-9_]+")

Effect = Literal["uninstalled", "frozen", "unfrozen", "duplicate", "ignored", "stale", "stored", "unknown_salon"]


@dataclass(frozen=True)
class WebhookResult:
    """What one lifecycle webhook did."""

    salon_id: int
    event: str
    effect: Effect


def event_type_for(event: str) -> str:
    """The audit-trail type of a webhook event (`webhook_uninstall`, `webhook_payment`, ...)."""
    cleaned = _EVENT_CHARS.sub("_", event.strip().lower()).strip("_") or "unknown"
    return f"webhook_{cleaned}"[:64]


async def apply_lifecycle_webhook(
    msg: YClientsWebhookReceived, *, uow: UnitOfWork, yclients: InstallApi
) -> WebhookResult:
    """Record the webhook and apply its effect once."""
    salon_id = msg.data.salon_id
    event = msg.data.event
    async with uow:
        first = await uow.claim_message(CONSUMER, msg.id)
        company = await lock_company(uow.session, salon_id)
        frozen = company is not None and company.integration_status == "frozen"
        if not first:
            effect: Effect = "duplicate"
        else:
            await record_event(
                uow.session,
                salon_id=salon_id,
                company_id=company.id if company else None,
                event_type=event_type_for(event),
                data={"event": event, "body": msg.data.body, "received_at": msg.occurred_at.isoformat()},
                message_id=msg.id,
            )
            effect = await _apply(uow, company, msg)
        await uow.commit()
    if event in UNFREEZING_EVENTS and frozen:
        result = await unfreeze_salon(salon_id, cause=msg, attempt=1, uow=uow, yclients=yclients)
        if result.outcome == "unfrozen":
            effect = "unfrozen"
    log.info("lifecycle webhook", extra={"event": event, "effect": effect})
    return WebhookResult(salon_id, event, effect)


async def _apply(uow: UnitOfWork, company: Company | None, msg: YClientsWebhookReceived) -> Effect:
    event = msg.data.event
    if event not in ("uninstall", "freeze"):
        return "stored"
    if company is None:
        return "unknown_salon"
    if await registered_after(uow.session, company.yclients_id, msg.occurred_at):
        return "stale"
    if event == "uninstall":
        return _uninstall(uow, company, msg)
    return _freeze(uow, company, msg)


def _uninstall(uow: UnitOfWork, company: Company, msg: YClientsWebhookReceived) -> Effect:
    previous = company.integration_status
    if previous == "uninstalled":
        return "duplicate"
    company.integration_status = "uninstalled"
    company.api_key_hash = None
    company.api_key_created_at = None
    company.whatsapp_connected = False
    follow = msg.follow_up() | {"salon_id": company.yclients_id}
    session_id = session_id_for(company.yclients_id)
    uow.emit(RequestLogout(**follow, data={"session_id": session_id, "reason": "uninstall"}))
    uow.emit(
        IntegrationStatusChanged(
            **follow, data={"salon_id": company.yclients_id, "status": "uninstalled", "previous": previous}
        )
    )
    return "uninstalled"


def _freeze(uow: UnitOfWork, company: Company, msg: YClientsWebhookReceived) -> Effect:
    previous = company.integration_status
    if previous == "frozen":
        return "duplicate"
    if previous not in FREEZABLE:
        return "ignored"
    company.integration_status = "frozen"
    follow = msg.follow_up() | {"salon_id": company.yclients_id}
    session_id = session_id_for(company.yclients_id)
    uow.emit(RequestPause(**follow, data={"session_id": session_id, "reason": "freeze"}))
    uow.emit(
        IntegrationStatusChanged(
            **follow, data={"salon_id": company.yclients_id, "status": "frozen", "previous": previous}
        )
    )
    return "frozen"
