"""Activation and lifecycle webhooks end to end: every service a process, YClients the sandbox.

WhatsApp is linked through the WhatsApp worker's emulator phone when that worker exists; until then the test
publishes `whatsapp.connected` itself (see `link_whatsapp`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.bus.replay import DeadMessage, list_dead
from shared.config import Settings
from shared.db.models import MarketplaceEvent, WhatsAppAuth
from shared.messages import (
    ActivationCompleted,
    ActivationFailed,
    IntegrationStatusChanged,
    RequestLogout,
    RequestPause,
    session_id_for,
)
from tests.integration.activation.e2e_support import (
    WHATSAPP_WORKER,
    Tap,
    activation_stack,
    click_connect,
    company,
    fault,
    link_whatsapp,
    replay_cli,
    sandbox_calls,
    sandbox_install,
    sha256,
    wait_registered,
    wait_session_state,
    wait_status,
    workers_log,
)
from tests.support.processes import Stack
from tests.support.wait import wait_for
from tests.unit.activation.support import database_text

pytestmark = pytest.mark.e2e
Sessions = async_sessionmaker[AsyncSession]
_ids = itertools.count(962_310_000)
TAPPED = (
    ActivationCompleted.ROUTING_KEY,
    ActivationFailed.ROUTING_KEY,
    IntegrationStatusChanged.ROUTING_KEY,
    RequestLogout.ROUTING_KEY,
    RequestPause.ROUTING_KEY,
)


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str]) -> Iterator[Stack]:
    with activation_stack(test_env, "activation_flow") as started:
        yield started


@pytest.fixture(scope="module")
async def bus(settings: Settings) -> AsyncIterator[Broker]:
    broker = Broker(settings.RABBITMQ_URL, name="activation-e2e", publish_timeout_s=5)
    await broker.connect(attempts=5)
    yield broker
    await broker.close()


@pytest.fixture(scope="module")
async def tap(bus: Broker) -> AsyncIterator[Tap]:
    opened = await Tap.open(bus, TAPPED)
    yield opened
    await opened.close()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client
        await client.delete(f"{stack.url('sandbox')}/__sandbox/faults")


async def install_and_link(
    http: httpx.AsyncClient, stack: Stack, bus: Broker, sessionmaker: Sessions, salon_id: int
) -> None:
    token = await click_connect(http, stack, [salon_id])
    await wait_registered(sessionmaker, [salon_id])
    await link_whatsapp(http, stack, bus, sessionmaker, salon_id, token)


async def test_redirect_to_active_with_one_callback_and_a_key_kept_only_as_its_hash(
    stack: Stack, http: httpx.AsyncClient, bus: Broker, tap: Tap, sessionmaker: Sessions, settings: Settings
) -> None:
    salon = next(_ids)

    await install_and_link(http, stack, bus, sessionmaker, salon)
    row = await wait_status(sessionmaker, salon, "active")

    assert row.whatsapp_connected and row.activated_at is not None
    [callback] = await sandbox_calls(http, stack, "callback", salon)
    assert callback["method"] == "POST" and callback["path"] == "/marketplace/partner/callback"
    assert callback["status"] == 201 and callback["auth_ok"] and callback["accept_ok"]
    headers = callback["headers"]
    assert headers["authorization"] == "Bearer ***"
    assert headers["accept"] == "application/vnd.yclients.v2+json"
    assert headers["content-type"] == "application/json"
    body = callback["body"]
    api_key = body["api_key"]
    assert body == {
        "salon_id": salon,
        "application_id": settings.YCLIENTS_APP_ID,
        "api_key": api_key,
        "webhook_urls": [stack.url("gateway") + "/webhook/yclients/data"],
        "channels": ["whatsapp"],
    }
    assert re.fullmatch(r"[0-9a-f]{64}", api_key)
    install = await sandbox_install(http, stack, salon)
    assert install is not None and install["status"] == "active" and install["api_key"] == api_key
    assert row.api_key_hash == sha256(api_key)
    assert api_key not in workers_log(stack)
    assert api_key not in await database_text(sessionmaker)
    completed = await tap.messages(ActivationCompleted, salon)
    assert len(completed) == 1 and api_key not in completed[0].model_dump_json()


async def test_5xx_for_the_first_attempts_then_active_after_retries(
    stack: Stack, http: httpx.AsyncClient, bus: Broker, sessionmaker: Sessions
) -> None:
    salon = next(_ids)
    await fault(http, stack, endpoint="callback", mode="5xx", count=2)

    await install_and_link(http, stack, bus, sessionmaker, salon)
    row = await wait_status(sessionmaker, salon, "active", timeout=30)

    assert [c["status"] for c in await sandbox_calls(http, stack, "callback", salon)] == [500, 500, 201]
    # Each retry asked first whether the install already happened.
    assert len(await sandbox_calls(http, stack, "status", salon)) == 2
    install = await sandbox_install(http, stack, salon)
    assert install is not None and row.api_key_hash == sha256(install["api_key"])


async def test_401_goes_to_dead_letters_at_once_and_replay_activates_after_the_fix(
    stack: Stack,
    http: httpx.AsyncClient,
    bus: Broker,
    tap: Tap,
    sessionmaker: Sessions,
    test_env: dict[str, str],
) -> None:
    salon = next(_ids)
    await fault(http, stack, endpoint="callback", mode="401")

    await install_and_link(http, stack, bus, sessionmaker, salon)
    failed = await wait_status(sessionmaker, salon, "activation_failed")

    assert failed.last_error is not None and "401" in failed.last_error

    async def parked() -> list[DeadMessage]:
        return [d for d in await list_dead(bus, "activation") if d.salon_id == salon]

    [dead] = await wait_for(parked, timeout=10, what="the message in activation.dead")
    assert dead.attempts == 1 and dead.reason.startswith("permanent")
    assert [c["status"] for c in await sandbox_calls(http, stack, "callback", salon)] == [401]
    [event] = await tap.messages(ActivationFailed, salon)
    assert isinstance(event, ActivationFailed) and event.data.permanent and event.data.status_code == 401

    await http.delete(f"{stack.url('sandbox')}/__sandbox/faults")
    dry = await replay_cli(test_env, "move", "activation", "--salon", str(salon))
    assert "would move 1" in dry
    assert [d.salon_id for d in await list_dead(bus, "activation")].count(salon) == 1
    moved = await replay_cli(test_env, "move", "activation", "--salon", str(salon), "--no-dry-run")
    assert "moved 1" in moved

    row = await wait_status(sessionmaker, salon, "active")
    assert [c["status"] for c in await sandbox_calls(http, stack, "callback", salon)] == [401, 201]
    install = await sandbox_install(http, stack, salon)
    assert install is not None and row.api_key_hash == sha256(install["api_key"])
    assert salon not in [d.salon_id for d in await list_dead(bus, "activation")]


async def test_a_lost_201_still_means_exactly_one_install(
    stack: Stack, http: httpx.AsyncClient, bus: Broker, tap: Tap, sessionmaker: Sessions
) -> None:
    salon = next(_ids)
    await fault(http, stack, endpoint="callback", mode="lost_response", count=1)

    await install_and_link(http, stack, bus, sessionmaker, salon)
    row = await wait_status(sessionmaker, salon, "active", timeout=30)

    [callback] = await sandbox_calls(http, stack, "callback", salon)
    assert callback["fault"] == "lost_response" and not callback["delivered"]
    assert len(await sandbox_calls(http, stack, "status", salon)) >= 1
    install = await sandbox_install(http, stack, salon)
    assert install is not None and row.api_key_hash == sha256(install["api_key"])
    [completed] = await tap.messages(ActivationCompleted, salon)
    assert isinstance(completed, ActivationCompleted) and completed.data.already_installed


async def webhook_events(sm: Sessions, salon_id: int, event_type: str) -> int:
    async with sm() as s:
        count = await s.execute(
            select(func.count()).where(MarketplaceEvent.salon_id == salon_id, MarketplaceEvent.event_type == event_type)
        )
        return int(count.scalar_one())


async def send_webhook(http: httpx.AsyncClient, stack: Stack, event: str, salon_id: int, **extra: object) -> int:
    """Have the sandbox (as YClients) send a lifecycle webhook to the gateway; returns the gateway's status."""
    response = await http.post(
        f"{stack.url('sandbox')}/__sandbox/webhooks/{event}", json={"salon_id": salon_id, **extra}
    )
    return response.status_code


async def test_lifecycle_webhooks(
    stack: Stack, http: httpx.AsyncClient, bus: Broker, tap: Tap, sessionmaker: Sessions
) -> None:
    salon = next(_ids)
    await install_and_link(http, stack, bus, sessionmaker, salon)
    await wait_status(sessionmaker, salon, "active")

    # Not from YClients: refused, nothing happens.
    assert await send_webhook(http, stack, "uninstall", salon, partner_token="not-the-token") == 403
    assert await send_webhook(http, stack, "uninstall", salon, application_id=1) == 403

    # Unknown (or undocumented) events are stored and acknowledged.
    assert await send_webhook(http, stack, "payment", salon) == 200

    async def payment_stored() -> bool:
        return await webhook_events(sessionmaker, salon, "webhook_payment") == 1

    await wait_for(payment_stored, timeout=10, what="the payment webhook stored")
    row = await company(sessionmaker, salon)
    assert row is not None and row.integration_status == "active" and row.api_key_hash is not None
    assert await webhook_events(sessionmaker, salon, "webhook_uninstall") == 0

    # The same uninstall three times: one effect.
    assert [await send_webhook(http, stack, "uninstall", salon) for _ in range(3)] == [200, 200, 200]

    async def all_three_seen() -> bool:
        return await webhook_events(sessionmaker, salon, "webhook_uninstall") == 3

    await wait_for(all_three_seen, timeout=15, what="three uninstall deliveries applied")
    row = await wait_status(sessionmaker, salon, "uninstalled")
    assert row.api_key_hash is None and not row.whatsapp_connected
    logouts = await tap.messages(RequestLogout, salon)
    assert len(logouts) == 1 and isinstance(logouts[0], RequestLogout)
    assert logouts[0].data.session_id == session_id_for(salon)
    uninstalled = [
        m
        for m in await tap.messages(IntegrationStatusChanged, salon)
        if isinstance(m, IntegrationStatusChanged) and m.data.status == "uninstalled"
    ]
    assert len(uninstalled) == 1
    if WHATSAPP_WORKER:
        await wait_session_state(sessionmaker, salon, "logged_out")

        async def credentials_gone() -> bool:
            async with sessionmaker() as s:
                left = await s.execute(select(func.count()).where(WhatsAppAuth.session_id == session_id_for(salon)))
                return int(left.scalar_one()) == 0

        await wait_for(credentials_gone, timeout=15, what="WhatsApp credentials wiped")


async def test_freeze_pauses_the_session_and_marks_frozen(
    stack: Stack, http: httpx.AsyncClient, bus: Broker, tap: Tap, sessionmaker: Sessions
) -> None:
    salon = next(_ids)
    await install_and_link(http, stack, bus, sessionmaker, salon)
    await wait_status(sessionmaker, salon, "active")

    assert await send_webhook(http, stack, "freeze", salon) == 200
    assert await send_webhook(http, stack, "freeze", salon) == 200
    row = await wait_status(sessionmaker, salon, "frozen")

    async def both_seen() -> bool:
        return await webhook_events(sessionmaker, salon, "webhook_freeze") == 2

    await wait_for(both_seen, timeout=10, what="both freeze deliveries applied")
    assert row.api_key_hash is not None  # frozen keeps the key and the credentials
    pauses = await tap.messages(RequestPause, salon)
    assert len(pauses) == 1
    if WHATSAPP_WORKER:
        await wait_session_state(sessionmaker, salon, "paused")
