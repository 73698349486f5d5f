"""The emulator engine against the in-memory emulated server: what a WhatsApp client sees, with tiny timings."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime

import pytest

from services.whatsapp.auth_store import InMemoryAuthStore
from services.whatsapp.emulator.engine import EmulatorEngine, EmulatorTimings
from services.whatsapp.emulator.protocol import PAIRING_ALPHABET, is_qr_payload
from services.whatsapp.emulator.server import InMemoryEmulatorServer
from services.whatsapp.engine import (
    ConnectedEvent,
    DisconnectedEvent,
    EngineEvent,
    LoggedOutEvent,
    NoCredentials,
    PairingCodeEvent,
    PairingExpiredEvent,
    QrEvent,
)

SID = "company_501"
TIMINGS = EmulatorTimings(qr_first_s=0.3, qr_next_s=0.15, qr_refs=4, code_ttl_s=0.5)


class Events:
    """A sink that records engine events and lets a test wait for the next one of a kind."""

    def __init__(self) -> None:
        self.items: list[EngineEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: EngineEvent) -> None:
        self.items.append(event)
        self._changed.set()

    def of(self, kind: type) -> list[EngineEvent]:
        return [e for e in self.items if isinstance(e, kind)]

    async def wait(self, kind: type, count: int = 1, timeout: float = 3.0) -> list[EngineEvent]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)


def make(owner: str = "w1", server: InMemoryEmulatorServer | None = None) -> tuple[EmulatorEngine, InMemoryAuthStore]:
    server = server or InMemoryEmulatorServer()
    auth = InMemoryAuthStore()
    engine = EmulatorEngine(server, auth, TIMINGS, owner=owner)
    server.listeners.append(engine.notify)
    return engine, auth


async def test_qr_refs_rotate_with_the_same_keys_then_expire() -> None:
    engine, _ = make()
    events = Events()
    started = datetime.now(UTC)
    await engine.start_qr_pairing(SID, "att-1", events)
    await events.wait(PairingExpiredEvent, timeout=3)
    qrs = [e for e in events.of(QrEvent) if isinstance(e, QrEvent)]
    assert [q.seq for q in qrs] == [1, 2, 3, 4]
    assert all(q.max == 4 and q.attempt_id == "att-1" for q in qrs)
    assert all(is_qr_payload(q.payload) for q in qrs)
    refs = [q.payload.split(",")[0] for q in qrs]
    keys = {tuple(q.payload.split(",")[1:]) for q in qrs}
    assert len(set(refs)) == 4, "each ref is new"
    assert len(keys) == 1, "the client's keys stay the same across the refs of one attempt"
    # The first ref lives qr_first_s, the next ones qr_next_s.
    first_life = (qrs[0].expires_at - started).total_seconds()
    assert 0.3 <= first_life <= 1.0
    gaps = [(b.expires_at - a.expires_at).total_seconds() for a, b in itertools.pairwise(qrs)]
    # Each next ref is issued when the previous one expires: gaps of qr_next_s (plus scheduling delay).
    assert all(0.15 <= g <= 0.6 for g in gaps), gaps
    assert events.of(PairingExpiredEvent) == [PairingExpiredEvent("att-1")]
    assert not engine.is_live(SID)


async def test_a_new_attempt_has_new_keys() -> None:
    engine, _ = make()
    first, second = Events(), Events()
    await engine.start_qr_pairing(SID, "att-a", first)
    await first.wait(QrEvent)
    await engine.start_qr_pairing(SID, "att-b", second)
    await second.wait(QrEvent)
    a = first.of(QrEvent)[0]
    b = second.of(QrEvent)[0]
    assert isinstance(a, QrEvent) and isinstance(b, QrEvent)
    assert a.payload.split(",")[1:] != b.payload.split(",")[1:]
    await engine.close()


async def test_only_the_current_payload_is_accepted_then_515_then_connected() -> None:
    server = InMemoryEmulatorServer()
    engine, auth = make(server=server)
    events = Events()
    await engine.start_qr_pairing(SID, "att-1", events)
    qrs = await events.wait(QrEvent, count=2)
    stale, current = qrs[0], qrs[1]
    assert isinstance(stale, QrEvent) and isinstance(current, QrEvent)

    assert await server.scan(SID, stale.payload, "79990000501") is False
    assert await server.scan(SID, "2@nonsense," + current.payload.split(",", 1)[1], "79990000501") is False
    assert await server.scan(SID, current.payload, "79990000501") is True
    # The same payload can't link twice.
    assert await server.scan(SID, current.payload, "79990000501") is False

    restart = await events.wait(DisconnectedEvent)
    assert restart == [DisconnectedEvent(515, "restart required")]
    stored = await auth.load(SID)
    assert stored is not None and stored.engine == "emulator"
    creds = json.loads(stored.creds)
    assert creds["phone"] == "79990000501"
    assert creds["me"]["id"].startswith("79990000501:")
    assert len([k for k in stored.keys if k[0] == "pre-key"]) == 5
    assert not events.of(PairingExpiredEvent)

    connected = Events()
    await engine.resume(SID, connected)
    assert connected.items == [ConnectedEvent("79990000501")]
    assert engine.is_live(SID)
    after = await auth.load(SID)
    assert after is not None and ("app-state-sync-key", "current") in after.keys
    await engine.close()
    assert not engine.is_live(SID)


async def test_pairing_code_has_whatsapps_shape_and_a_wrong_code_is_refused() -> None:
    server = InMemoryEmulatorServer()
    engine, auth = make(server=server)
    events = Events()
    await engine.start_phone_pairing(SID, "att-1", "79161234567", events)
    [issued] = await events.wait(PairingCodeEvent)
    assert isinstance(issued, PairingCodeEvent)
    code = issued.code
    assert len(code) == 9 and code[4] == "-"
    assert all(c in PAIRING_ALPHABET for c in code.replace("-", ""))
    wrong = ("1" if code[0] != "1" else "2") + code.replace("-", "")[1:]
    assert await server.enter_code(SID, wrong) is False
    assert await server.enter_code(SID, code.replace("-", "")) is True
    await events.wait(DisconnectedEvent)
    stored = await auth.load(SID)
    assert stored is not None and json.loads(stored.creds)["phone"] == "79161234567"


async def test_a_pairing_code_expires_and_is_refused_afterwards() -> None:
    server = InMemoryEmulatorServer()
    engine, _ = make(server=server)
    events = Events()
    await engine.start_phone_pairing(SID, "att-1", "79161234567", events)
    [issued] = await events.wait(PairingCodeEvent)
    await events.wait(PairingExpiredEvent)
    assert isinstance(issued, PairingCodeEvent)
    assert await server.enter_code(SID, issued.code.replace("-", "")) is False


async def _connected(server: InMemoryEmulatorServer, owner: str = "w1") -> tuple[EmulatorEngine, InMemoryAuthStore]:
    engine, auth = make(owner, server)
    events = Events()
    await engine.start_qr_pairing(SID, "att", events)
    [qr] = await events.wait(QrEvent)
    assert isinstance(qr, QrEvent)
    assert await server.scan(SID, qr.payload, "79990000501")
    await events.wait(DisconnectedEvent)
    return engine, auth


@pytest.mark.parametrize("code", [408, 428, 503, 500, 515])
async def test_a_drop_ends_the_stream_with_its_code(code: int) -> None:
    server = InMemoryEmulatorServer()
    engine, _ = await _connected(server)
    events = Events()
    await engine.resume(SID, events)
    assert await server.request_drop(SID, code)
    [dropped] = await events.wait(DisconnectedEvent)
    assert isinstance(dropped, DisconnectedEvent) and dropped.code == code
    assert not engine.is_live(SID)
    # Nothing is connected any more, so the server has nothing to drop.
    assert await server.request_drop(SID, code) is False


async def test_removed_on_the_phone_is_401_and_the_device_cannot_come_back() -> None:
    server = InMemoryEmulatorServer()
    engine, _ = await _connected(server)
    events = Events()
    await engine.resume(SID, events)
    assert await server.request_drop(SID, 401)
    assert (await events.wait(LoggedOutEvent))[0] == LoggedOutEvent(
        401, "logged out: the device was removed on the phone"
    )
    again = Events()
    await engine.resume(SID, again)
    assert again.items == [LoggedOutEvent(401, "the device is no longer linked")]


async def test_a_second_connection_elsewhere_replaces_the_first_with_440() -> None:
    server = InMemoryEmulatorServer()
    engine_a, auth = await _connected(server, owner="worker-a")
    first = Events()
    await engine_a.resume(SID, first)
    # Another worker resumes the same credentials (a takeover): the server keeps one connection per device.
    engine_b = EmulatorEngine(server, auth, TIMINGS, owner="worker-b")
    server.listeners.append(engine_b.notify)
    second = Events()
    await engine_b.resume(SID, second)
    assert second.items == [ConnectedEvent("79990000501")]
    [replaced] = await first.wait(DisconnectedEvent)
    assert isinstance(replaced, DisconnectedEvent) and replaced.code == 440
    assert (await server.describe(SID))["device"]["connection_owner"] == "worker-b"


async def test_resume_without_credentials_says_so() -> None:
    engine, _ = make()
    with pytest.raises(NoCredentials):
        await engine.resume(SID, Events())


async def test_logout_unlinks_the_device() -> None:
    server = InMemoryEmulatorServer()
    engine, _ = await _connected(server)
    await engine.resume(SID, Events())
    await engine.logout(SID)
    assert (await server.describe(SID)) == {"linked": False}
    assert not engine.is_live(SID)
