"""The emulated WhatsApp server's contract, for both implementations (PostgreSQL, shared by processes; memory)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.emulator.protocol import ClientKeys, new_ref
from services.whatsapp.emulator.server import (
    NOTIFY_CHANNEL,
    EmulatorServer,
    InMemoryEmulatorServer,
    PostgresEmulatorServer,
)
from services.whatsapp.notify import asyncpg_dsn
from shared.config import Settings
from tests.integration.whatsapp.helpers import new_session
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "memory"])
def server(request: pytest.FixtureRequest, sessionmaker: async_sessionmaker[AsyncSession]) -> EmulatorServer:
    if request.param == "postgres":
        return PostgresEmulatorServer(sessionmaker)
    return InMemoryEmulatorServer()


async def confirming_client(server: EmulatorServer, sid: str, attempt_id: str) -> bool:
    """The attempt's client: waits for the scan, then confirms it (as the engine does after storing creds)."""
    await wait_for(lambda: server.pairing_outcome(sid, attempt_id), timeout=5, what="the scan")
    return await server.confirm_pairing(sid, attempt_id)


async def scan_confirmed(server: EmulatorServer, sid: str, attempt_id: str, payload: str, phone: str) -> bool:
    """A scan while the attempt's client is alive and confirms."""
    client = asyncio.create_task(confirming_client(server, sid, attempt_id))
    try:
        return await server.scan(sid, payload, phone)
    finally:
        client.cancel()


async def linked(server: EmulatorServer, keys: ClientKeys | None = None) -> tuple[str, ClientKeys]:
    _, sid = new_session()
    keys = keys or ClientKeys.generate()
    await server.begin_pairing(sid, "att", keys.identity_pub_b64)
    issued = await server.issue_ref(sid, "att", keys.qr_payload(new_ref()), 30)
    assert issued is not None
    assert await scan_confirmed(server, sid, "att", issued.value, "79990000009")
    return sid, keys


async def test_only_the_latest_unexpired_ref_of_the_current_attempt_links(server: EmulatorServer) -> None:
    _, sid = new_session()
    keys = ClientKeys.generate()
    await server.begin_pairing(sid, "att-1", keys.identity_pub_b64)
    first = await server.issue_ref(sid, "att-1", keys.qr_payload(new_ref()), 30)
    second = await server.issue_ref(sid, "att-1", keys.qr_payload(new_ref()), 30)
    assert first is not None and second is not None
    assert not await server.scan(sid, first.value, "79990000001"), "rotated away"
    # A new attempt invalidates the old one's refs.
    await server.begin_pairing(sid, "att-2", keys.identity_pub_b64)
    assert not await server.scan(sid, second.value, "79990000001")
    expired = await server.issue_ref(sid, "att-2", keys.qr_payload(new_ref()), 0.05)
    assert expired is not None
    await asyncio.sleep(0.1)  # the ref's own lifetime, not a wait for a condition
    assert not await server.scan(sid, expired.value, "79990000001"), "expired"
    current = await server.issue_ref(sid, "att-2", keys.qr_payload(new_ref()), 30)
    assert current is not None
    assert await server.pairing_outcome(sid, "att-2") is None
    assert await scan_confirmed(server, sid, "att-2", current.value, "79990000001")
    outcome = await server.pairing_outcome(sid, "att-2")
    assert outcome is not None and outcome.phone == "79990000001"
    # Paired: the attempt hands out nothing more.
    assert await server.issue_ref(sid, "att-2", keys.qr_payload(new_ref()), 30) is None
    assert await server.end_pairing(sid, "att-2") == outcome


async def test_codes_link_the_phone_they_were_asked_for(server: EmulatorServer) -> None:
    _, sid = new_session()
    keys = ClientKeys.generate()
    await server.begin_pairing(sid, "att", keys.identity_pub_b64)
    await server.issue_code(sid, "att", "ABCDEFGH", "79161234567", 30)
    assert not await server.enter_code(sid, "ABCDEFGJ")
    client = asyncio.create_task(confirming_client(server, sid, "att"))
    assert await server.enter_code(sid, "ABCDEFGH")
    assert await client
    assert not await server.enter_code(sid, "ABCDEFGH")
    outcome = await server.pairing_outcome(sid, "att")
    assert outcome is not None and outcome.phone == "79161234567"


async def test_one_connection_per_device_and_drops(server: EmulatorServer) -> None:
    sid, keys = await linked(server)
    assert (await server.connect(sid, ClientKeys.generate().identity_pub_b64, "w1")).refused_code == 401
    first = await server.connect(sid, keys.identity_pub_b64, "w1")
    assert first.refused_code is None and first.phone == "79990000009"
    second = await server.connect(sid, keys.identity_pub_b64, "w2")
    state = await server.connection(sid)
    assert state is not None and state.seq == second.seq > first.seq and state.owner == "w2"

    assert await server.request_drop(sid, 428)
    assert not await server.request_drop(sid, 428), "one drop at a time"
    assert await server.take_drop(sid, first.seq) is None, "only the current connection is told"
    assert await server.take_drop(sid, second.seq) == 428
    assert not await server.request_drop(sid, 428), "nothing connected any more"

    third = await server.connect(sid, keys.identity_pub_b64, "w2")
    assert await server.request_drop(sid, 401)
    assert await server.take_drop(sid, third.seq) == 401
    assert (await server.connect(sid, keys.identity_pub_b64, "w2")).refused_code == 401, "removed on the phone"
    described: dict[str, Any] = await server.describe(sid)
    assert described["linked"] is False and described["device"]["revoked"] is True


async def test_unlink_forgets_the_device(server: EmulatorServer) -> None:
    sid, keys = await linked(server)
    await server.connect(sid, keys.identity_pub_b64, "w1")
    await server.unlink(sid)
    assert await server.connection(sid) is None
    assert (await server.connect(sid, keys.identity_pub_b64, "w1")).refused_code == 401
    assert await server.describe(sid) == {"linked": False}


async def test_postgres_server_notifies_every_change_a_client_waits_for(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    server = PostgresEmulatorServer(sessionmaker)
    notified: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(asyncpg_dsn(settings.DATABASE_URL))
    await conn.add_listener(NOTIFY_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    try:
        sid, keys = await linked(server)
        assert await asyncio.wait_for(notified.get(), timeout=5) == sid  # the scan
        await server.connect(sid, keys.identity_pub_b64, "w1")
        assert await asyncio.wait_for(notified.get(), timeout=5) == sid  # a connection (replacing others)
        await server.request_drop(sid, 503)
        assert await asyncio.wait_for(notified.get(), timeout=5) == sid  # the drop
    finally:
        await conn.close()
