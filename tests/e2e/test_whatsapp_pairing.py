"""The whatsapp worker as a process, with the real broker and database: pairing, policy, pause, logout.

Commands are published to the exchange as the gateway/activation would; events are observed on a private
queue bound to ``whatsapp.#``; the emulated phone is the worker's own ``/emulator/*`` endpoints.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.messages import (
    PairingCodeIssued,
    PairingExpired,
    QrIssued,
    RequestLogout,
    RequestPairing,
    RequestPause,
    WhatsAppConnected,
    WhatsAppDisconnected,
    WhatsAppLoggedOut,
)
from tests.integration.whatsapp.helpers import EventTap, auth_rows, event_tap, new_session, park_created, session_row
from tests.support.processes import ServiceProcess, Stack, running_stack
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
async def _park_sessions(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """After the module's workers stopped, park its sessions so other modules' workers don't resume them."""
    yield
    await park_created(sessionmaker)


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str]) -> Iterator[Stack]:
    with running_stack(test_env, "whatsapp_pairing") as s:
        yield s


@pytest.fixture(scope="module")
def worker(stack: Stack) -> ServiceProcess:
    return stack.start(
        "whatsapp",
        WHATSAPP_EMULATOR_QR_FIRST_S="2",
        WHATSAPP_EMULATOR_QR_NEXT_S="1",
        WHATSAPP_EMULATOR_QR_REFS="3",
        WHATSAPP_EMULATOR_CODE_TTL_S="6",
        WHATSAPP_LEASE_S="3",
        WHATSAPP_LEASE_CHECK_S="1",
        WHATSAPP_BACKOFF_BASE_S="0.3",
        WHATSAPP_BACKOFF_CAP_S="3",
        WHATSAPP_MAX_CONNECTS_PER_MINUTE="5",
    )


@pytest.fixture(scope="module")
async def tap(publisher: Broker, worker: ServiceProcess) -> AsyncIterator[EventTap]:
    async with event_tap(publisher) as t:
        yield t


@pytest.fixture
async def phone(worker: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=worker.url, timeout=5) as client:
        yield client


async def request_pairing(
    publisher: Broker, salon_id: int, session_id: str, *, mode: str = "qr", phone: str | None = None
) -> None:
    await publisher.publish(
        RequestPairing(salon_id=salon_id, data={"session_id": session_id, "mode": mode, "phone": phone})
    )


async def connect_by_qr(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient, salon_id: int, session_id: str
) -> WhatsAppConnected:
    await request_pairing(publisher, salon_id, session_id)
    [qr] = await tap.wait_for(QrIssued, session_id)
    scan = await phone.post("/emulator/scan", json={"session_id": session_id, "qr": qr.data.payload})
    assert scan.status_code == 200, scan.text
    [connected] = await tap.wait_for(WhatsAppConnected, session_id)
    assert isinstance(connected, WhatsAppConnected)
    return connected


async def test_qr_shown_stale_refused_current_accepted_connected_within_a_second(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await request_pairing(publisher, salon_id, sid)
    qrs = await tap.wait_for(QrIssued, sid, count=2, timeout=10)
    first, second = qrs[0], qrs[1]
    assert (first.data.seq, second.data.seq) == (1, 2) and first.data.max == 3
    assert first.salon_id == salon_id and first.correlation_id == second.correlation_id
    assert first.data.payload.split(",")[1:] == second.data.payload.split(",")[1:]
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "pairing"
    assert (row.qr_payload, row.qr_seq, row.qr_max) == (second.data.payload, 2, 3)
    assert row.qr_expires_at is not None and abs((row.qr_expires_at - second.data.expires_at).total_seconds()) < 0.01

    stale = await phone.post("/emulator/scan", json={"session_id": sid, "qr": first.data.payload})
    assert stale.status_code == 409, stale.text
    scanned = time.monotonic()
    ok = await phone.post("/emulator/scan", json={"session_id": sid, "qr": second.data.payload})
    assert ok.status_code == 200, ok.text
    [connected] = await tap.wait_for(WhatsAppConnected, sid, timeout=5)
    assert time.monotonic() - scanned < 1.0
    assert connected.data.phone == ok.json()["phone"]
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "connected" and row.qr_payload is None
    assert await auth_rows(sessionmaker, sid) > 1
    again = await phone.post("/emulator/scan", json={"session_id": sid, "qr": second.data.payload})
    assert again.status_code == 409
    assert not tap.of(WhatsAppDisconnected, sid), "the 515 restart after the scan is not a disconnect"


async def test_refs_run_out_then_a_fresh_attempt_works(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await request_pairing(publisher, salon_id, sid)
    [expired] = await tap.wait_for(PairingExpired, sid, timeout=10)
    old = tap.of(QrIssued, sid)
    assert [q.data.seq for q in old] == [1, 2, 3], "one event per ref, exactly"
    assert expired.data.attempt_id == old[0].data.attempt_id
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "pairing_expired" and row.qr_payload is None
    late = await phone.post("/emulator/scan", json={"session_id": sid, "qr": old[-1].data.payload})
    assert late.status_code == 409

    await request_pairing(publisher, salon_id, sid)
    [fresh] = await tap.wait_for(
        QrIssued, sid, where=lambda q: q.data.attempt_id != expired.data.attempt_id, timeout=10
    )
    assert fresh.data.seq == 1
    ok = await phone.post("/emulator/scan", json={"session_id": sid, "qr": fresh.data.payload})
    assert ok.status_code == 200, ok.text
    await tap.wait_for(WhatsAppConnected, sid)


async def test_pairing_by_phone_code(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await request_pairing(publisher, salon_id, sid, mode="phone", phone="79161112233")
    [issued] = await tap.wait_for(PairingCodeIssued, sid)
    code = issued.data.code
    assert len(code) == 9 and code[4] == "-"
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.pairing_code == code and row.state == "pairing"
    wrong = await phone.post("/emulator/pair", json={"session_id": sid, "code": "2222-2222"})
    assert wrong.status_code == 409
    ok = await phone.post("/emulator/pair", json={"session_id": sid, "code": code.lower()})
    assert ok.status_code == 200, ok.text
    [connected] = await tap.wait_for(WhatsAppConnected, sid)
    assert connected.data.phone == "79161112233"


async def test_flapping_connection_produces_a_bounded_number_of_events(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient
) -> None:
    salon_id, sid = new_session()
    await connect_by_qr(publisher, tap, phone, salon_id, sid)
    before = (await phone.get(f"/emulator/sessions/{sid}")).json()["device"]["connections"]
    accepted = 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        drop = await phone.post("/emulator/drop", json={"session_id": sid, "code": 428})
        assert drop.status_code in (200, 409), drop.text
        accepted += drop.status_code == 200
    after = (await phone.get(f"/emulator/sessions/{sid}")).json()["device"]["connections"]
    await tap.wait_for(WhatsAppDisconnected, sid, count=accepted)
    disconnected = tap.of(WhatsAppDisconnected, sid)
    # WHATSAPP_MAX_CONNECTS_PER_MINUTE=5: hammering for 8 s yields at most 5 reconnects and 5 events.
    assert 2 <= accepted <= 5
    assert after - before <= 5
    assert len(disconnected) == accepted
    assert all(d.data.retrying and d.data.code == 428 for d in disconnected)
    assert len(tap.of(WhatsAppConnected, sid)) <= 1 + 5
    delays = [d.data.retry_in_s for d in disconnected]
    assert delays[-1] > delays[0], f"the backoff climbs while the connection flaps: {delays}"


async def test_removed_on_the_phone_logs_out_and_wipes(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await connect_by_qr(publisher, tap, phone, salon_id, sid)
    assert await auth_rows(sessionmaker, sid) > 0
    drop = await phone.post("/emulator/drop", json={"session_id": sid, "code": 401})
    assert drop.status_code == 200
    [logged_out] = await tap.wait_for(WhatsAppLoggedOut, sid)
    assert logged_out.data.code == 401 and logged_out.salon_id == salon_id
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "logged_out" and row.owner is None
    assert await auth_rows(sessionmaker, sid) == 0


async def test_pause_keeps_credentials_and_a_pairing_request_resumes_without_a_scan(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await connect_by_qr(publisher, tap, phone, salon_id, sid)
    await publisher.publish(RequestPause(salon_id=salon_id, data={"session_id": sid, "reason": "frozen"}))

    async def paused() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.state == "paused" and row.owner is None

    await wait_for(paused, timeout=10, what="paused")
    assert await auth_rows(sessionmaker, sid) > 0
    server = (await phone.get(f"/emulator/sessions/{sid}")).json()
    assert server["linked"] and not server["device"]["connected"]

    await request_pairing(publisher, salon_id, sid)
    await tap.wait_for(WhatsAppConnected, sid, count=2)
    assert len(tap.of(QrIssued, sid)) == 1, "resumed from the stored credentials, no new QR"


async def test_logout_wipes_credentials(
    publisher: Broker, tap: EventTap, phone: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await connect_by_qr(publisher, tap, phone, salon_id, sid)
    await publisher.publish(RequestLogout(salon_id=salon_id, data={"session_id": sid, "reason": "uninstall"}))
    [event] = await tap.wait_for(WhatsAppLoggedOut, sid)
    assert event.data.code is None
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "logged_out"
    assert await auth_rows(sessionmaker, sid) == 0
    assert (await phone.get(f"/emulator/sessions/{sid}")).json() == {"linked": False}
    # A later pairing request starts from scratch.
    await request_pairing(publisher, salon_id, sid)
    [qr] = await tap.wait_for(QrIssued, sid, where=lambda q: q.occurred_at > event.occurred_at)
    assert qr.data.seq == 1


async def test_the_phone_endpoints_refuse_bad_input_with_reasons(phone: httpx.AsyncClient) -> None:
    _, sid = new_session()
    assert (await phone.post("/emulator/scan", json={"session_id": sid})).status_code == 422
    assert (await phone.post("/emulator/scan", json={"session_id": "nope", "qr": "x"})).status_code == 422
    unknown = await phone.post("/emulator/scan", json={"session_id": sid, "qr": "2@abc,def,ghi,jkl"})
    assert unknown.status_code == 409 and "not valid" in unknown.json()["detail"]
    assert (await phone.post("/emulator/pair", json={"session_id": sid, "code": "short"})).status_code == 409
    bad_code = await phone.post("/emulator/drop", json={"session_id": sid, "code": 999})
    assert bad_code.status_code == 422
    idle = await phone.post("/emulator/drop", json={"session_id": sid, "code": 428})
    assert idle.status_code == 409 and "not connected" in idle.json()["detail"]
