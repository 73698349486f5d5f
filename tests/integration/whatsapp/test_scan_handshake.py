"""A scan is a handshake: the phone sees success only when the attempt's live client confirmed the pairing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.auth_store import InMemoryAuthStore
from services.whatsapp.emulator.engine import EmulatorEngine, EmulatorTimings
from services.whatsapp.emulator.protocol import ClientKeys, new_ref
from services.whatsapp.emulator.server import EmulatorServer, InMemoryEmulatorServer, PostgresEmulatorServer
from services.whatsapp.engine import ConnectedEvent, DisconnectedEvent, EngineEvent, QrEvent
from tests.integration.whatsapp.helpers import new_session
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

SHORT_CONFIRM_S = 0.4


@pytest.fixture(params=["postgres", "memory"])
def server(request: pytest.FixtureRequest, sessionmaker: async_sessionmaker[AsyncSession]) -> EmulatorServer:
    if request.param == "postgres":
        return PostgresEmulatorServer(sessionmaker, confirm_s=SHORT_CONFIRM_S)
    return InMemoryEmulatorServer(confirm_s=SHORT_CONFIRM_S)


async def test_a_scan_whose_client_is_gone_is_refused_and_leaves_nothing_linked(server: EmulatorServer) -> None:
    _, sid = new_session()
    keys = ClientKeys.generate()
    # The client began the attempt and showed its QR, then died: nobody will confirm.
    await server.begin_pairing(sid, "att", keys.identity_pub_b64)
    issued = await server.issue_ref(sid, "att", keys.qr_payload(new_ref()), 30)
    assert issued is not None
    assert await server.scan(sid, issued.value, "79990000001") is False
    described: dict[str, Any] = await server.describe(sid)
    assert described["linked"] is False and "device" not in described
    assert described["pairing"]["paired"] is False and described["pairing"]["confirmed"] is False
    assert await server.pairing_outcome(sid, "att") is None
    # A confirmation arriving after the phone stopped waiting is refused too, and links nothing.
    assert await server.confirm_pairing(sid, "att") is False
    assert (await server.connect(sid, keys.identity_pub_b64, "w1")).refused_code == 401
    # The same attempt can still be paired with its next ref by a live client.
    again = await server.issue_ref(sid, "att", keys.qr_payload(new_ref()), 30)
    assert again is not None


async def test_a_typed_code_whose_client_is_gone_is_refused(server: EmulatorServer) -> None:
    _, sid = new_session()
    keys = ClientKeys.generate()
    await server.begin_pairing(sid, "att", keys.identity_pub_b64)
    assert await server.issue_code(sid, "att", "ABCDEFGH", "79161234567", 30) is not None
    assert await server.enter_code(sid, "ABCDEFGH") is False
    assert (await server.describe(sid))["linked"] is False


async def test_a_scan_replaced_by_a_new_attempt_is_refused_without_waiting_out_the_timeout(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    _, sid = new_session()
    server = PostgresEmulatorServer(sessionmaker, confirm_s=30)
    keys = ClientKeys.generate()
    await server.begin_pairing(sid, "att-a", keys.identity_pub_b64)
    issued = await server.issue_ref(sid, "att-a", keys.qr_payload(new_ref()), 30)
    assert issued is not None
    scan = asyncio.create_task(server.scan(sid, issued.value, "79990000001"))
    await wait_for(lambda: server.pairing_outcome(sid, "att-a"), timeout=5, what="the scan")
    await server.begin_pairing(sid, "att-b", ClientKeys.generate().identity_pub_b64)
    assert await asyncio.wait_for(scan, timeout=5) is False
    assert await server.confirm_pairing(sid, "att-a") is False, "attempt A's client can't link any more"
    assert (await server.describe(sid))["linked"] is False


class Events:
    """A sink recording engine events."""

    def __init__(self) -> None:
        self.items: list[EngineEvent] = []

    def __call__(self, event: EngineEvent) -> None:
        self.items.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]


async def test_a_scan_of_a_cancelled_attempts_qr_is_refused_and_the_new_attempt_pairs() -> None:
    _, sid = new_session()
    server = InMemoryEmulatorServer(confirm_s=SHORT_CONFIRM_S)
    auth = InMemoryAuthStore()
    engine = EmulatorEngine(server, auth, EmulatorTimings(qr_first_s=30, qr_next_s=30, qr_refs=2), owner="w1")
    server.listeners.append(engine.notify)
    first, second = Events(), Events()
    await engine.start_qr_pairing(sid, "att-a", first)
    await wait_for(lambda: _async(first.of(QrEvent)), timeout=5, what="attempt A's QR")
    qr_a = first.of(QrEvent)[0]
    # A second pairing request: attempt A's flow is cancelled, attempt B shows its own QR.
    await engine.start_qr_pairing(sid, "att-b", second)
    await wait_for(lambda: _async(second.of(QrEvent)), timeout=5, what="attempt B's QR")
    qr_b = second.of(QrEvent)[0]

    assert await server.scan(sid, qr_a.payload, "79990000001") is False, "A's client is gone"
    assert await auth.load(sid) is None
    described = await server.describe(sid)
    assert described["linked"] is False and described["pairing"]["attempt_id"] == "att-b"
    assert described["pairing"]["waiting_for_scan"] is True, "still pairing with B's QR"

    assert await server.scan(sid, qr_b.payload, "79990000001") is True
    await wait_for(lambda: _async(second.of(DisconnectedEvent)), timeout=5, what="515 after the link")
    assert second.of(DisconnectedEvent)[0].code == 515
    assert not first.of(DisconnectedEvent), "attempt A never linked"
    connected = Events()
    await engine.resume(sid, connected)
    assert connected.items == [ConnectedEvent("79990000001")]
    await engine.close()


async def _async(value: list[Any]) -> list[Any]:
    return value
