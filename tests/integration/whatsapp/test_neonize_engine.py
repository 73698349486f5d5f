"""The neonize engine offline: lazy import, its store in our database, the unreachable path, event mapping."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.auth_store import InMemoryAuthStore, PostgresAuthStore
from services.whatsapp.engine import (
    ConnectedEvent,
    DisconnectedEvent,
    EngineEvent,
    LoggedOutEvent,
    NoCredentials,
    PairingCodeEvent,
    PairingExpiredEvent,
    QrEvent,
    UnreachableEvent,
)
from services.whatsapp.neonize_engine import NeonizeEngine, neonize_client_factory, store_url_for
from shared.config import Settings
from shared.db.models import WhatsAppSession
from tests.integration.whatsapp.helpers import new_session
from tests.support.processes import ROOT
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
neonize = pytest.importorskip("neonize", reason="the optional `neonize` extra is not installed")


class Sink:
    def __init__(self) -> None:
        self.items: list[EngineEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, event: EngineEvent) -> None:
        self.items.append(event)
        self.changed.set()

    async def wait(self, kind: type, timeout: float = 15.0) -> Any:
        async with asyncio.timeout(timeout):
            while not [e for e in self.items if isinstance(e, kind)]:
                self.changed.clear()
                await self.changed.wait()
        return next(e for e in self.items if isinstance(e, kind))


def test_neonize_is_not_imported_unless_selected() -> None:
    code = (
        "import sys, services.whatsapp.__main__, services.whatsapp.engines, services.whatsapp.neonize_engine;"
        "assert 'neonize' not in sys.modules, 'imported at module import'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


def test_the_store_url_is_our_database_in_the_whatsmeow_schema() -> None:
    url = store_url_for("postgresql+asyncpg://user:pw@db.example:5432/marketplace")
    assert url.startswith("postgres://user:pw@db.example:5432/marketplace?")
    assert "search_path=whatsmeow" in url and "sslmode=disable" in url


async def _session_row(sessionmaker: async_sessionmaker[AsyncSession], session_id: str, salon_id: int) -> None:
    async with sessionmaker() as db, db.begin():
        await db.execute(
            insert(WhatsAppSession)
            .values(session_id=session_id, salon_id=salon_id, state="new", desired="running", failures=0)
            .on_conflict_do_nothing()
        )


async def test_offline_pairing_and_resume_end_in_unreachable_with_the_store_in_our_database(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    salon_id, sid = new_session()
    await _session_row(sessionmaker, sid, salon_id)
    auth = PostgresAuthStore(sessionmaker)
    engine = NeonizeEngine(auth, store_url=store_url_for(settings.DATABASE_URL), client_factory=neonize_client_factory)

    sink = Sink()
    await engine.start_qr_pairing(sid, "att-1", sink)
    failed = await sink.wait(UnreachableEvent)
    assert "whatsapp" in failed.reason.lower()
    assert not engine.is_live(sid)
    async with sessionmaker() as db:
        tables = (await db.execute(text("SELECT to_regclass('whatsmeow.whatsmeow_device')"))).scalar()
    assert tables is not None, "whatsmeow created its store in our database, schema whatsmeow"

    with pytest.raises(NoCredentials):
        await engine.resume(sid, Sink())
    from neonize.proto.Neonize_pb2 import JID

    user = f"7999{salon_id}"
    jid = JID(User=user, Device=5, Server="s.whatsapp.net", RawAgent=0, Integrator=0, IsEmpty=False)
    jid_string = f"{user}:5@s.whatsapp.net"
    creds = {"jid": base64.b64encode(jid.SerializeToString()).decode(), "jid_string": jid_string}
    await auth.save(sid, engine="neonize", creds=json.dumps(creds).encode())
    # whatsmeow aborts the process on a device it doesn't have: the engine refuses before asking it.
    with pytest.raises(NoCredentials):
        await engine.resume(sid, Sink())
    await _store_device(sessionmaker, jid_string)
    resumed = Sink()
    await engine.resume(sid, resumed)
    await resumed.wait(UnreachableEvent)
    await engine.close()


async def _store_device(sessionmaker: async_sessionmaker[AsyncSession], jid: str) -> None:
    """A device row as whatsmeow writes it after a pairing (dummy keys of the right sizes)."""
    async with sessionmaker() as db, db.begin():
        await db.execute(
            text(
                "INSERT INTO whatsmeow.whatsmeow_device (jid, registration_id, noise_key, identity_key, signed_pre_key,"
                " signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details, adv_account_sig, adv_account_sig_key,"
                " adv_device_sig) VALUES (:jid, 1, :k, :k, :k, 1, :s, :k, :k, :s, :k, :s)"
            ),
            {"jid": jid, "k": b"k" * 32, "s": b"s" * 64},
        )


async def test_forget_deletes_the_device_from_the_whatsmeow_store_in_the_wipe_transaction(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    salon_id, sid = new_session()
    await _session_row(sessionmaker, sid, salon_id)
    auth = PostgresAuthStore(sessionmaker)
    engine = NeonizeEngine(auth, store_url=store_url_for(settings.DATABASE_URL), client_factory=neonize_client_factory)
    # Let whatsmeow create its tables (an offline connect does), then put a device in them.
    sink = Sink()
    await engine.start_qr_pairing(sid, "att", sink)
    await sink.wait(UnreachableEvent)
    jid = f"7999{salon_id}:3@s.whatsapp.net"
    await _store_device(sessionmaker, jid)
    await auth.save(sid, engine="neonize", creds=json.dumps({"jid": "", "jid_string": jid}).encode())

    async with sessionmaker() as db, db.begin():
        await engine.forget(sid, db)
        await auth.wipe(sid, db=db)
    async with sessionmaker() as db:
        left = (
            await db.execute(text("SELECT count(*) FROM whatsmeow.whatsmeow_device WHERE jid = :j"), {"j": jid})
        ).scalar()
    assert left == 0
    assert await auth.load(sid) is None
    await engine.close()


# ---- event mapping with a stand-in client (the ClientFactory is our boundary) -------------------------


class FakeEvents:
    def __init__(self) -> None:
        self.handlers: dict[type, Callable[..., Any]] = {}
        self.qr_handler: Callable[..., Any] | None = None

    def qr(self, f: Callable[..., Any]) -> None:
        self.qr_handler = f

    def __call__(self, kind: type) -> Callable[[Callable[..., Any]], None]:
        def register(f: Callable[..., Any]) -> None:
            self.handlers[kind] = f

        return register


class FakeClient:
    def __init__(self, jid: Any) -> None:
        self.jid = jid
        self.event = FakeEvents()
        self.stopped = False
        self.logged_out = False
        self.connect_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def connect(self) -> asyncio.Future[None]:
        return self.connect_future

    async def stop(self) -> None:
        self.stopped = True

    async def logout(self) -> None:
        self.logged_out = True

    async def PairPhone(self, phone: str, push: bool) -> str:
        return "ABCD-EFGH"

    async def fire(self, kind: type, event: Any) -> None:
        await self.event.handlers[kind](self, event)


async def _always_there(jid: str) -> bool:
    return True


def fake_engine(**timings: float) -> tuple[NeonizeEngine, InMemoryAuthStore, list[FakeClient]]:
    clients: list[FakeClient] = []

    def factory(store_url: str, jid: Any, uuid: str, new_device: bool) -> FakeClient:
        client = FakeClient(jid)
        clients.append(client)
        return client

    auth = InMemoryAuthStore()
    engine = NeonizeEngine(
        auth,
        store_url="postgres://unused",
        client_factory=factory,
        device_check=_always_there,
        **timings,  # type: ignore[arg-type]
    )
    return engine, auth, clients


async def test_qr_codes_are_counted_and_expire_after_the_last_one() -> None:
    engine, _, clients = fake_engine(qr_refs=3, qr_first_s=0.05, qr_next_s=0.05)
    sink = Sink()
    await engine.start_qr_pairing("company_1", "att", sink)
    client = clients[0]
    assert client.event.qr_handler is not None
    for n in range(3):
        await client.event.qr_handler(client, f"2@ref{n},a,b,c".encode())
    qrs = [e for e in sink.items if isinstance(e, QrEvent)]
    assert [(q.seq, q.max) for q in qrs] == [(1, 3), (2, 3), (3, 3)]
    await sink.wait(PairingExpiredEvent, timeout=2)

    async def stopped() -> bool:
        return client.stopped

    await wait_for(stopped, timeout=2, what="the expired client to be stopped")


async def test_pair_success_saves_credentials_and_connected_reports_the_phone() -> None:
    from neonize.aioze.events import ConnectedEv, PairStatusEv, StreamReplacedEv
    from neonize.proto.Neonize_pb2 import JID

    engine, auth, clients = fake_engine()
    sink = Sink()
    await engine.start_qr_pairing("company_2", "att", sink)
    client = clients[0]
    await client.fire(
        PairStatusEv,
        PairStatusEv(
            ID=JID(User="79995550011", Device=7, Server="s.whatsapp.net", RawAgent=0, Integrator=0, IsEmpty=False)
        ),
    )
    stored = await auth.load("company_2")
    assert stored is not None and stored.engine == "neonize"
    creds = json.loads(stored.creds)
    assert creds["phone"] == "79995550011" and creds["jid_string"] == "79995550011:7@s.whatsapp.net"
    await client.fire(ConnectedEv, ConnectedEv())
    assert ConnectedEvent("79995550011") in sink.items and engine.is_live("company_2")

    # A resume builds the client for the stored device.
    resumed = Sink()
    await engine.resume("company_2", resumed)
    assert clients[1].jid.User == "79995550011" and clients[0].stopped
    await clients[1].fire(StreamReplacedEv, StreamReplacedEv())
    assert resumed.items == [DisconnectedEvent(440, "connection replaced: the session was opened elsewhere")]


async def test_connect_failures_map_to_policy_codes() -> None:
    from neonize.aioze.events import ConnectFailureEv, LoggedOutEv
    from neonize.proto.Neonize_pb2 import ConnectFailureReason

    engine, _, clients = fake_engine()
    sink = Sink()
    await engine.start_qr_pairing("company_3", "att", sink)
    await clients[0].fire(ConnectFailureEv, ConnectFailureEv(Reason=ConnectFailureReason.Value("TEMP_BANNED")))
    assert isinstance(sink.items[-1], LoggedOutEvent) and sink.items[-1].code == 403

    sink2 = Sink()
    await engine.start_qr_pairing("company_3", "att2", sink2)
    await clients[1].fire(LoggedOutEv, LoggedOutEv())
    assert sink2.items == [LoggedOutEvent(401, "logged out: the device was removed on the phone")]

    sink3 = Sink()
    await engine.start_qr_pairing("company_3", "att3", sink3)
    clients[2].connect_future.set_exception(RuntimeError("failed to dial whatsapp web websocket: no such host"))
    failed = await sink3.wait(UnreachableEvent, timeout=2)
    assert "no such host" in failed.reason


async def test_phone_pairing_asks_for_the_code_when_the_server_waits_for_pairing() -> None:
    engine, _, clients = fake_engine(code_ttl_s=5)
    sink = Sink()
    await engine.start_phone_pairing("company_4", "att", "79161234567", sink)
    client = clients[0]
    assert client.event.qr_handler is not None
    await client.event.qr_handler(client, b"2@ref,a,b,c")
    [code] = [e for e in sink.items if isinstance(e, PairingCodeEvent)]
    assert code.code == "ABCD-EFGH" and code.attempt_id == "att"
    assert not [e for e in sink.items if isinstance(e, QrEvent)], "no QR is shown in phone mode"
    await engine.close()
