"""Lifecycle webhooks applied by the activation worker: one effect per change, whatever arrives twice or late."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.activation.lifecycle import apply_lifecycle_webhook, event_type_for
from services.activation.service import activate_salon
from services.registration.service import register_salons
from shared.config import Settings
from shared.db.uow import UnitOfWork
from shared.messages import (
    IntegrationStatusChanged,
    Message,
    RegistrationRequested,
    RequestLogout,
    RequestPairing,
    RequestPause,
    YClientsWebhookReceived,
    session_id_for,
    utcnow,
)
from shared.yclients import YClientsClient
from tests.unit.activation.support import (
    add_company,
    company,
    connected,
    events,
    manual,
    new_salon_id,
    sandbox_calls,
    sandbox_install,
)

Sessions = async_sessionmaker[AsyncSession]


def new_uow(sm: Sessions) -> UnitOfWork:
    return UnitOfWork(sm, producer="activation")


def webhook(salon_id: int, event: str, settings: Settings, **extra: Any) -> YClientsWebhookReceived:
    body = {"salon_id": salon_id, "application_id": settings.YCLIENTS_APP_ID, "event": event, **extra}
    return YClientsWebhookReceived(
        salon_id=salon_id,
        data={"salon_id": salon_id, "application_id": settings.YCLIENTS_APP_ID, "event": event, "body": body},
    )


def of_type(msgs: list[Message], kind: type[Message]) -> list[Message]:
    return [m for m in msgs if isinstance(m, kind)]


async def active_salon(sm: Sessions, yclients: YClientsClient, settings: Settings) -> int:
    salon = new_salon_id()
    await add_company(sm, salon)
    result = await activate_salon(connected(salon), uow=new_uow(sm), yclients=yclients, settings=settings)
    assert result.outcome == "activated"
    return salon


async def test_uninstall_logs_out_revokes_the_key_and_marks_uninstalled(
    sessionmaker: Sessions, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    uow = new_uow(sessionmaker)

    result = await apply_lifecycle_webhook(webhook(salon, "uninstall", settings), uow=uow, yclients=yclients)

    assert result.effect == "uninstalled"
    row = await company(sessionmaker, salon)
    assert row.integration_status == "uninstalled"
    assert row.api_key_hash is None and row.api_key_created_at is None and not row.whatsapp_connected
    emitted = uow.take_committed()
    logout = of_type(emitted, RequestLogout)
    assert len(logout) == 1 and isinstance(logout[0], RequestLogout)
    assert logout[0].data.session_id == session_id_for(salon)
    changed = of_type(emitted, IntegrationStatusChanged)
    assert len(changed) == 1 and isinstance(changed[0], IntegrationStatusChanged)
    assert (changed[0].data.status, changed[0].data.previous) == ("uninstalled", "active")
    stored = await events(sessionmaker, salon, "webhook_uninstall")
    assert len(stored) == 1 and "partner_token" not in stored[0].event_data["body"]


async def test_the_same_uninstall_three_times_has_one_effect(
    sessionmaker: Sessions, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    uow = new_uow(sessionmaker)
    deliveries = [webhook(salon, "uninstall", settings) for _ in range(3)]

    effects = [(await apply_lifecycle_webhook(d, uow=uow, yclients=yclients)).effect for d in deliveries]
    redelivered = await apply_lifecycle_webhook(deliveries[0], uow=uow, yclients=yclients)

    assert effects == ["uninstalled", "duplicate", "duplicate"]
    assert redelivered.effect == "duplicate"
    emitted = uow.take_committed()
    assert len(of_type(emitted, RequestLogout)) == 1
    assert len(of_type(emitted, IntegrationStatusChanged)) == 1
    # Every delivery is on record, each once.
    assert len(await events(sessionmaker, salon, "webhook_uninstall")) == 3


async def test_freeze_pauses_once_and_only_an_installed_salon(
    sessionmaker: Sessions, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    pending = new_salon_id()
    await add_company(sessionmaker, pending)
    uow = new_uow(sessionmaker)

    first = await apply_lifecycle_webhook(webhook(salon, "freeze", settings), uow=uow, yclients=yclients)
    second = await apply_lifecycle_webhook(webhook(salon, "freeze", settings), uow=uow, yclients=yclients)
    not_installed = await apply_lifecycle_webhook(webhook(pending, "freeze", settings), uow=uow, yclients=yclients)

    assert (first.effect, second.effect, not_installed.effect) == ("frozen", "duplicate", "ignored")
    row = await company(sessionmaker, salon)
    assert row.integration_status == "frozen" and row.api_key_hash is not None
    pauses = of_type(uow.take_committed(), RequestPause)
    assert len(pauses) == 1 and isinstance(pauses[0], RequestPause)
    assert pauses[0].data.session_id == session_id_for(salon)
    assert (await company(sessionmaker, pending)).integration_status == "pending_whatsapp"


async def test_uninstall_of_a_frozen_salon_still_applies(
    sessionmaker: Sessions, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    await apply_lifecycle_webhook(webhook(salon, "freeze", settings), uow=new_uow(sessionmaker), yclients=yclients)

    result = await apply_lifecycle_webhook(
        webhook(salon, "uninstall", settings), uow=new_uow(sessionmaker), yclients=yclients
    )

    assert result.effect == "uninstalled"
    assert (await company(sessionmaker, salon)).integration_status == "uninstalled"


async def test_unknown_events_are_stored_and_change_nothing(
    sessionmaker: Sessions, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    uow = new_uow(sessionmaker)

    payment = await apply_lifecycle_webhook(
        webhook(salon, "payment", settings, payment_sum=990, currency="RUB"), uow=uow, yclients=yclients
    )
    odd = await apply_lifecycle_webhook(webhook(salon, "Что-то Новое!", settings), uow=uow, yclients=yclients)

    assert (payment.effect, odd.effect) == ("stored", "stored")
    assert uow.take_committed() == []
    assert (await company(sessionmaker, salon)).integration_status == "active"
    stored = await events(sessionmaker, salon, "webhook_payment")
    assert len(stored) == 1 and stored[0].event_data["body"]["payment_sum"] == 990
    assert len(await events(sessionmaker, salon, event_type_for("Что-то Новое!"))) == 1


async def test_a_webhook_for_an_unknown_salon_is_stored(
    sessionmaker: Sessions, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    result = await apply_lifecycle_webhook(
        webhook(salon, "uninstall", settings), uow=new_uow(sessionmaker), yclients=yclients
    )
    assert result.effect == "unknown_salon"
    stored = await events(sessionmaker, salon, "webhook_uninstall")
    assert len(stored) == 1 and stored[0].company_id is None


async def test_payment_unfreezes_once_yclients_says_active(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    # The platform freezes the install and tells us.
    assert (await sandbox.post("/__sandbox/webhooks/freeze", json={"salon_id": salon})).status_code == 200
    await apply_lifecycle_webhook(webhook(salon, "freeze", settings), uow=new_uow(sessionmaker), yclients=yclients)
    early = await apply_lifecycle_webhook(
        webhook(salon, "payment", settings), uow=new_uow(sessionmaker), yclients=yclients
    )
    assert early.effect == "stored"
    assert (await company(sessionmaker, salon)).integration_status == "frozen"

    paid = await sandbox.post(
        "/marketplace/partner/payment",
        headers={
            "Authorization": f"Bearer {settings.YCLIENTS_PARTNER_TOKEN.get_secret_value()}",
            "Accept": "application/vnd.yclients.v2+json",
        },
        json={
            "salon_id": salon,
            "application_id": settings.YCLIENTS_APP_ID,
            "payment_sum": 990,
            "currency_iso": "RUB",
            "payment_date": "2026-11-26 10:00:00",
            "period_from": "2026-11-26 00:00:00",
            "period_to": "2026-12-26 00:00:00",
        },
    )
    assert paid.status_code == 200, paid.text
    uow = new_uow(sessionmaker)
    result = await apply_lifecycle_webhook(webhook(salon, "payment", settings), uow=uow, yclients=yclients)

    assert result.effect == "unfrozen"
    assert (await company(sessionmaker, salon)).integration_status == "active"
    committed = uow.take_committed()
    changed = of_type(committed, IntegrationStatusChanged)
    assert len(changed) == 1 and isinstance(changed[0], IntegrationStatusChanged)
    assert (changed[0].data.status, changed[0].data.previous) == ("active", "frozen")
    # The paused WhatsApp session is asked to come back (from its kept credentials, no new scan).
    resumed = of_type(committed, RequestPairing)
    assert len(resumed) == 1 and isinstance(resumed[0], RequestPairing)
    assert resumed[0].data.session_id == f"company_{salon}"
    # A manual request on an active salon does not call the callback again.
    again = await activate_salon(manual(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)
    assert again.outcome == "already_active"
    assert len(await sandbox_calls(sandbox, "callback")) == 1


async def test_a_webhook_older_than_the_latest_install_redirect_is_only_recorded(
    sessionmaker: Sessions, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    late = webhook(salon, "uninstall", settings)
    late = late.model_copy(update={"occurred_at": utcnow() - timedelta(minutes=5)})
    await register_salons(
        RegistrationRequested(salon_id=salon, data={"salon_ids": [salon]}),
        uow=UnitOfWork(sessionmaker, producer="registration"),
    )

    result = await apply_lifecycle_webhook(late, uow=new_uow(sessionmaker), yclients=yclients)

    assert result.effect == "stale"
    assert (await company(sessionmaker, salon)).integration_status == "active"


async def test_a_reinstall_after_uninstall_activates_from_scratch(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = await active_salon(sessionmaker, yclients, settings)
    first_install = await sandbox_install(sandbox, salon)
    assert first_install is not None
    assert (await sandbox.post("/__sandbox/webhooks/uninstall", json={"salon_id": salon})).status_code == 200
    await apply_lifecycle_webhook(webhook(salon, "uninstall", settings), uow=new_uow(sessionmaker), yclients=yclients)
    await register_salons(
        RegistrationRequested(salon_id=salon, data={"salon_ids": [salon]}),
        uow=UnitOfWork(sessionmaker, producer="registration"),
    )
    assert (await company(sessionmaker, salon)).integration_status == "pending_whatsapp"

    result = await activate_salon(connected(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert result.outcome == "activated"
    install = await sandbox_install(sandbox, salon)
    assert install is not None and install["status"] == "active"
    assert install["api_key"] != first_install["api_key"]
    assert len(await sandbox_calls(sandbox, "callback")) == 2
