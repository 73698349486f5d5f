"""activate_salon against the real database and the YClients sandbox in-process (no broker)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.activation.lifecycle import apply_lifecycle_webhook
from services.activation.service import activate_salon, give_up, note_logged_out
from services.activation.store import ACTIVATION_STARTED
from shared.bus.errors import PermanentError, TransientError, is_permanent
from shared.config import Settings
from shared.db.audit import record_event
from shared.db.models import MarketplaceEvent
from shared.db.uow import UnitOfWork
from shared.messages import (
    ActivationCompleted,
    ActivationFailed,
    IntegrationStatusChanged,
    WhatsAppLoggedOut,
    YClientsWebhookReceived,
    session_id_for,
    utcnow,
)
from shared.yclients import YClientsClient, YClientsTransientError
from tests.support.wait import wait_for
from tests.unit.activation.support import (
    add_company,
    attempts,
    company,
    connected,
    database_text,
    events,
    manual,
    new_salon_id,
    sandbox_calls,
    sandbox_install,
)

Sessions = async_sessionmaker[AsyncSession]


def new_uow(sm: Sessions) -> UnitOfWork:
    return UnitOfWork(sm, producer="activation")


async def fault(sandbox: httpx.AsyncClient, mode: str, endpoint: str = "callback", **extra: object) -> None:
    response = await sandbox.post("/__sandbox/faults", json={"endpoint": endpoint, "mode": mode, **extra})
    assert response.status_code == 201, response.text


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def test_connected_salon_is_activated_with_one_callback_and_only_a_hash_stored(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    uow = new_uow(sessionmaker)

    result = await activate_salon(connected(salon, "79990001122"), uow=uow, yclients=yclients, settings=settings)

    assert result.outcome == "activated"
    row = await company(sessionmaker, salon)
    assert row.integration_status == "active"
    assert row.whatsapp_connected and row.whatsapp_phone == "79990001122"
    assert row.activated_at is not None and row.api_key_created_at is not None
    callbacks = await sandbox_calls(sandbox, "callback")
    assert len(callbacks) == 1
    call = callbacks[0]
    assert call["auth_ok"] and call["accept_ok"] and call["status"] == 201
    assert call["headers"]["content-type"] == "application/json"
    body = call["body"]
    assert body["salon_id"] == salon and body["application_id"] == settings.YCLIENTS_APP_ID
    assert body["webhook_urls"] == [settings.BASE_URL + "/webhook/yclients/data"]
    assert body["channels"] == ["whatsapp"]
    install = await sandbox_install(sandbox, salon)
    assert install is not None and install["status"] == "active"
    plain = install["api_key"]
    assert len(plain) == 64 and int(plain, 16) >= 0
    assert row.api_key_hash == sha256(plain)
    assert plain not in await database_text(sessionmaker)
    emitted = uow.take_committed()
    assert [type(m) for m in emitted] == [IntegrationStatusChanged, ActivationCompleted, IntegrationStatusChanged]
    assert all(plain not in m.model_dump_json() for m in emitted)
    done = emitted[1]
    assert isinstance(done, ActivationCompleted) and not done.data.already_installed
    rows = await attempts(sessionmaker, salon)
    assert [(a.action, a.status_code, a.outcome) for a in rows] == [("callback", 201, "installed")]
    assert len(await events(sessionmaker, salon, "activation_completed")) == 1


async def test_an_active_salon_is_not_called_again(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    first = connected(salon)
    await activate_salon(first, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)
    key_hash = (await company(sessionmaker, salon)).api_key_hash

    again = await activate_salon(first, uow=new_uow(sessionmaker), yclients=yclients, settings=settings, attempt=2)
    clicked = await activate_salon(manual(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert again.outcome == clicked.outcome == "already_active"
    assert len(await sandbox_calls(sandbox)) == 1
    assert (await company(sessionmaker, salon)).api_key_hash == key_hash


async def test_5xx_is_retried_and_the_retry_checks_the_status_first(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "5xx", count=1)
    msg = connected(salon)

    with pytest.raises(YClientsTransientError) as raised:
        await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)
    assert not is_permanent(raised.value)
    assert (await company(sessionmaker, salon)).integration_status == "activating"

    result = await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings, attempt=2)

    assert result.outcome == "activated"
    row = await company(sessionmaker, salon)
    assert row.integration_status == "active" and row.last_error is None
    install = await sandbox_install(sandbox, salon)
    assert install is not None and row.api_key_hash == sha256(install["api_key"])
    assert [c["endpoint"] for c in await sandbox_calls(sandbox)] == ["callback", "status", "callback"]
    rows = await attempts(sessionmaker, salon)
    assert [(a.attempt, a.action, a.status_code, a.outcome) for a in rows] == [
        (1, "callback", 500, "transient_error"),
        (2, "status_check", 404, "not_installed"),
        (2, "callback", 201, "installed"),
    ]


async def test_a_lost_201_leads_to_no_second_callback_and_no_second_key(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "lost_response", count=1)
    msg = connected(salon)

    with pytest.raises(YClientsTransientError):
        await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)
    before = await company(sessionmaker, salon)
    install = await sandbox_install(sandbox, salon)
    assert install is not None and install["status"] == "active"
    assert before.integration_status == "activating"

    uow = new_uow(sessionmaker)
    result = await activate_salon(msg, uow=uow, yclients=yclients, settings=settings, attempt=2)

    assert result.outcome == "already_installed"
    after = await company(sessionmaker, salon)
    assert after.integration_status == "active"
    assert after.api_key_hash == before.api_key_hash == sha256(install["api_key"])
    assert after.api_key_created_at == before.api_key_created_at
    assert [c["endpoint"] for c in await sandbox_calls(sandbox)] == ["callback", "status"]
    done = [m for m in uow.take_committed() if isinstance(m, ActivationCompleted)]
    assert len(done) == 1 and done[0].data.already_installed


async def test_a_redelivered_message_of_a_crashed_worker_checks_the_status_first(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "lost_response", count=1)
    msg = connected(salon)
    with pytest.raises(YClientsTransientError):
        await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    # The broker redelivers the message unacked by a dead worker: attempt 1 again.
    result = await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings, attempt=1)

    assert result.outcome == "already_installed"
    assert len(await sandbox_calls(sandbox, "callback")) == 1


@pytest.mark.parametrize(
    ("mode", "status_code"),
    [("401", 401), ("422", 422), ("400_aggregator", 400)],
)
async def test_permanent_answers_fail_at_once(
    mode: str,
    status_code: int,
    sessionmaker: Sessions,
    sandbox: httpx.AsyncClient,
    yclients: YClientsClient,
    settings: Settings,
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, mode, count=1)
    uow = new_uow(sessionmaker)

    with pytest.raises(PermanentError) as raised:
        await activate_salon(connected(salon), uow=uow, yclients=yclients, settings=settings)

    assert is_permanent(raised.value)
    row = await company(sessionmaker, salon)
    assert row.integration_status == "activation_failed"
    assert row.last_error is not None and str(status_code) in row.last_error
    assert row.api_key_hash is None  # the refused key authenticates nothing
    failed = [m for m in uow.take_committed() if isinstance(m, ActivationFailed)]
    assert len(failed) == 1
    assert failed[0].data.permanent and failed[0].data.status_code == status_code
    rows = await attempts(sessionmaker, salon)
    assert [(a.action, a.status_code, a.outcome) for a in rows] == [("callback", status_code, "permanent_error")]
    # The consumer's give-up hook runs next: the state already says it all, nothing more is emitted.
    hook = new_uow(sessionmaker)
    assert not await give_up(connected(salon), "permanent: refused", uow=hook)
    assert hook.take_committed() == []


async def test_a_403_without_access_is_permanent(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, sandbox_app: object, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon, connected=True)
    transport = httpx.ASGITransport(app=sandbox_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport) as http:
        foreign = YClientsClient(
            http, base_url="http://sandbox.test", partner_token=settings.YCLIENTS_PARTNER_TOKEN, application_id=999
        )
        with pytest.raises(PermanentError):
            await activate_salon(manual(salon), uow=new_uow(sessionmaker), yclients=foreign, settings=settings)
    row = await company(sessionmaker, salon)
    assert row.integration_status == "activation_failed" and "403" in (row.last_error or "")


async def test_already_installed_is_success_once_the_status_confirms_it(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    earlier_key = "e" * 64
    await add_company(sessionmaker, salon, api_key_hash=sha256(earlier_key))
    # Installed on the platform by an earlier callback whose outcome this database never recorded.
    await yclients.activate(salon, earlier_key, [settings.BASE_URL + "/webhook/yclients/data"])
    uow = new_uow(sessionmaker)

    result = await activate_salon(connected(salon), uow=uow, yclients=yclients, settings=settings)

    assert result.outcome == "already_installed"
    row = await company(sessionmaker, salon)
    assert row.integration_status == "active"
    assert row.api_key_hash == sha256(earlier_key)  # YClients kept that key
    assert [c["status"] for c in await sandbox_calls(sandbox, "callback")] == [201, 403]
    rows = await attempts(sessionmaker, salon)
    assert [(a.action, a.status_code, a.outcome) for a in rows] == [
        ("callback", 403, "rejected_installed"),
        ("status_check", 200, "installed"),
    ]


async def test_already_installed_not_confirmed_is_retried(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "403_installed", count=1)

    with pytest.raises(TransientError):
        await activate_salon(connected(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert (await company(sessionmaker, salon)).integration_status == "activating"


async def test_exhausted_retries_mark_the_salon_failed_through_the_give_up_hook(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "5xx")
    msg = connected(salon)
    with pytest.raises(YClientsTransientError):
        await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    hook = new_uow(sessionmaker)
    assert await give_up(msg, "exhausted after 3 attempts: HTTP 500", uow=hook)

    row = await company(sessionmaker, salon)
    assert row.integration_status == "activation_failed"
    failed = [m for m in hook.take_committed() if isinstance(m, ActivationFailed)]
    assert len(failed) == 1 and not failed[0].data.permanent
    assert "500" in failed[0].data.reason


async def test_a_failed_salon_is_activated_again_on_request_after_checking_the_status(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "401", count=1)
    msg = connected(salon)
    with pytest.raises(PermanentError):
        await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    # Replay moves the very same message back (same id, attempts counted afresh).
    result = await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert result.outcome == "activated"
    assert [c["endpoint"] for c in await sandbox_calls(sandbox)] == ["callback", "status", "callback"]
    install = await sandbox_install(sandbox, salon)
    assert install is not None
    assert (await company(sessionmaker, salon)).api_key_hash == sha256(install["api_key"])


async def test_manual_request_needs_a_linked_whatsapp(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)

    result = await activate_salon(manual(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert result.outcome == "not_connected"
    assert await sandbox_calls(sandbox) == []
    assert (await company(sessionmaker, salon)).integration_status == "pending_whatsapp"
    assert len(await events(sessionmaker, salon, "activation_skipped")) == 1


@pytest.mark.parametrize("status", ["uninstalled", "frozen"])
async def test_uninstalled_and_frozen_salons_are_not_activated(
    status: str, sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon, status=status, connected=status == "frozen")

    result = await activate_salon(connected(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert result.outcome == "not_activatable"
    assert await sandbox_calls(sandbox) == []
    row = await company(sessionmaker, salon)
    assert row.integration_status == status
    assert row.whatsapp_connected is (status == "frozen")


async def test_a_second_message_does_not_start_a_second_activation(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    company_id = await add_company(sessionmaker, salon, status="activating", connected=True)
    owner = connected(salon)
    async with sessionmaker() as s:
        await record_event(
            s, salon_id=salon, company_id=company_id, event_type=ACTIVATION_STARTED, data={}, message_id=owner.id
        )
        await s.commit()

    result = await activate_salon(manual(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert result.outcome == "in_progress"
    assert await sandbox_calls(sandbox) == []


async def test_an_abandoned_activation_is_taken_over_after_checking_the_status(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    company_id = await add_company(sessionmaker, salon, status="activating", connected=True)
    owner = connected(salon)
    async with sessionmaker() as s:
        await record_event(
            s, salon_id=salon, company_id=company_id, event_type=ACTIVATION_STARTED, data={}, message_id=owner.id
        )
        await s.execute(
            update(MarketplaceEvent)
            .where(MarketplaceEvent.message_id == owner.id)
            .values(created_at=utcnow() - timedelta(hours=1))
        )
        await s.commit()

    result = await activate_salon(manual(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert result.outcome == "activated"
    assert [c["endpoint"] for c in await sandbox_calls(sandbox)] == ["status", "callback"]


async def test_an_uninstall_during_the_call_is_not_undone_by_its_success(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "slow", count=1, delay_s=0.5)
    uow = new_uow(sessionmaker)
    activation = asyncio.create_task(activate_salon(connected(salon), uow=uow, yclients=yclients, settings=settings))

    async def is_activating() -> bool:
        return (await company(sessionmaker, salon)).integration_status == "activating"

    await wait_for(is_activating, timeout=5, what="activation in flight")
    hook = YClientsWebhookReceived(
        salon_id=salon, data={"salon_id": salon, "application_id": settings.YCLIENTS_APP_ID, "event": "uninstall"}
    )
    await apply_lifecycle_webhook(hook, uow=new_uow(sessionmaker), yclients=yclients)
    result = await activation

    assert result.outcome == "superseded"
    row = await company(sessionmaker, salon)
    assert row.integration_status == "uninstalled" and row.api_key_hash is None
    assert not [m for m in uow.take_committed() if isinstance(m, ActivationCompleted)]


async def test_every_salon_of_a_multi_location_install_gets_its_own_callback(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salons = [new_salon_id() for _ in range(3)]
    for salon in salons:
        await add_company(sessionmaker, salon)

    results = await asyncio.gather(
        *(activate_salon(connected(s), uow=new_uow(sessionmaker), yclients=yclients, settings=settings) for s in salons)
    )

    assert [r.outcome for r in results] == ["activated"] * 3
    callbacks = await sandbox_calls(sandbox, "callback")
    assert sorted(c["body"]["salon_id"] for c in callbacks) == sorted(salons)
    keys = set()
    for salon in salons:
        install = await sandbox_install(sandbox, salon)
        assert install is not None
        keys.add(install["api_key"])
        assert (await company(sessionmaker, salon)).api_key_hash == sha256(install["api_key"])
    assert len(keys) == 3


async def test_an_unregistered_salon_is_retried_later(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    with pytest.raises(TransientError):
        await activate_salon(connected(new_salon_id()), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)
    assert await sandbox_calls(sandbox) == []


async def test_logged_out_clears_the_link_unless_a_newer_connect_was_applied(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    old_logout = WhatsAppLoggedOut(
        salon_id=salon,
        occurred_at=utcnow() - timedelta(seconds=30),
        data={"session_id": session_id_for(salon), "code": 401, "reason": "device removed"},
    )
    await activate_salon(connected(salon), uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert not await note_logged_out(old_logout, uow=new_uow(sessionmaker))
    assert (await company(sessionmaker, salon)).whatsapp_connected

    logout = WhatsAppLoggedOut(salon_id=salon, data={"session_id": session_id_for(salon), "code": 401})
    assert await note_logged_out(logout, uow=new_uow(sessionmaker))
    row = await company(sessionmaker, salon)
    assert not row.whatsapp_connected and row.integration_status == "active"
    assert len(await events(sessionmaker, salon, "whatsapp_logged_out")) == 1


async def test_a_replayed_message_activates_after_a_later_message_also_failed(
    sessionmaker: Sessions, sandbox: httpx.AsyncClient, yclients: YClientsClient, settings: Settings
) -> None:
    salon = new_salon_id()
    await add_company(sessionmaker, salon)
    await fault(sandbox, "401", count=2)
    first, clicked = connected(salon), manual(salon)
    for msg in (first, clicked):
        with pytest.raises(PermanentError):
            await activate_salon(msg, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    # The operator replays the first message: it owns the new activation, the later one does not block it.
    result = await activate_salon(first, uow=new_uow(sessionmaker), yclients=yclients, settings=settings)

    assert result.outcome == "activated"
    assert (await company(sessionmaker, salon)).integration_status == "active"
