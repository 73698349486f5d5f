"""Session pools of in-process workers on the real PostgreSQL: pairing, commands, policy, ownership, fencing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.auth_store import PostgresAuthStore
from services.whatsapp.emulator.server import PostgresEmulatorServer
from services.whatsapp.policy import Backoff, ConnectionPolicy
from shared.config import Settings
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
from tests.integration.whatsapp.helpers import (
    InProcessWorker,
    auth_rows,
    in_process_worker,
    new_session,
    park_created,
    release_everything,
    session_row,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def make_worker(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> AsyncIterator[Callable[..., InProcessWorker]]:
    started: list[InProcessWorker] = []

    def make(**kwargs: object) -> InProcessWorker:
        worker = in_process_worker(sessionmaker, settings.DATABASE_URL, **kwargs)  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.shutdown()
        await release_everything(sessionmaker, worker.worker_id)
    await park_created(sessionmaker)


@pytest.fixture
async def worker(make_worker: Callable[..., InProcessWorker]) -> InProcessWorker:
    w = make_worker()
    w.start()
    await w.ready()
    return w


@pytest.fixture
def server(sessionmaker: async_sessionmaker[AsyncSession]) -> PostgresEmulatorServer:
    return PostgresEmulatorServer(sessionmaker)


def pairing(session_id: str, salon_id: int, mode: str = "qr", phone: str | None = None) -> RequestPairing:
    return RequestPairing(salon_id=salon_id, data={"session_id": session_id, "mode": mode, "phone": phone})


async def paired(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> tuple[int, str]:
    """A session paired by QR and connected in ``worker``."""
    salon_id, sid = new_session()
    await worker.command(pairing(sid, salon_id))

    async def first_qr() -> list[QrIssued]:
        return worker.recorder.of(QrIssued, sid)

    [qr] = await wait_for(first_qr, timeout=5, what="the first QR")
    assert await server.scan(sid, qr.data.payload, "79990000001")

    async def connected() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.state == "connected"

    await wait_for(connected, timeout=5, what="connected")
    return salon_id, sid


async def test_qr_pairing_end_to_end_in_one_worker(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await worker.command(pairing(sid, salon_id))

    async def two_qrs() -> list[QrIssued]:
        return [q for q in worker.recorder.of(QrIssued, sid) if q.data.seq >= 2]

    await wait_for(two_qrs, timeout=5, what="the second QR")
    qrs = worker.recorder.of(QrIssued, sid)
    assert [q.data.seq for q in qrs] == [1, 2], "exactly one event per ref"
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "pairing" and row.qr_payload == qrs[1].data.payload
    assert row.qr_seq == 2 and row.qr_max == 3 and row.owner == worker.worker_id

    assert not await server.scan(sid, qrs[0].data.payload, "79990000001"), "a stale QR is refused"
    scanned_at = time.monotonic()
    assert await server.scan(sid, qrs[1].data.payload, "79990000001")

    async def connected() -> list[WhatsAppConnected]:
        return worker.recorder.of(WhatsAppConnected, sid)

    [event] = await wait_for(connected, timeout=5, what="WhatsAppConnected")
    assert time.monotonic() - scanned_at < 1.0
    assert event.data.phone == "79990000001" and event.salon_id == salon_id
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "connected" and row.phone == "79990000001"
    assert row.qr_payload is None and row.pairing_code is None
    assert await auth_rows(sessionmaker, sid) >= 6
    # The 515 restart after the scan is success: no disconnected event, one connected event.
    assert not worker.recorder.of(WhatsAppDisconnected, sid)
    await asyncio.sleep(0.3)
    assert len(worker.recorder.of(WhatsAppConnected, sid)) == 1


class HeldAnswerAuth(PostgresAuthStore):
    """Credentials as stored, except that one armed `exists` answers what was true when it was asked, later."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(sessionmaker)
        self.hold: asyncio.Event | None = None
        self.asked = asyncio.Event()

    async def exists(self, session_id: str) -> bool:
        answer = await super().exists(session_id)
        hold, self.hold = self.hold, None
        if hold is not None:
            self.asked.set()
            await hold.wait()
        return answer


async def test_a_phone_scanning_the_attempt_being_replaced_ends_connected(
    make_worker: Callable[..., InProcessWorker],
    server: PostgresEmulatorServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # Found by `python -m chaos --real-broker-stop`: a second pairing request was being applied (the runner had
    # seen no credentials and chose a new attempt) while the phone scanned the first attempt's QR; the first
    # flow linked the device and the new attempt waited for a scan that never came.
    auth = HeldAnswerAuth(sessionmaker)
    worker = make_worker(auth=auth)
    worker.start()
    await worker.ready()
    salon_id, sid = new_session()
    await worker.command(pairing(sid, salon_id))

    async def first_qr() -> list[QrIssued]:
        return worker.recorder.of(QrIssued, sid)

    [qr] = await wait_for(first_qr, timeout=5, what="the first QR")
    release = asyncio.Event()
    auth.hold = release
    await worker.command(pairing(sid, salon_id))
    await asyncio.wait_for(auth.asked.wait(), timeout=5)
    # The runner has its answer (no credentials yet); now the phone scans the QR still on the screen.
    assert await server.scan(sid, qr.data.payload, "79990000001")
    release.set()

    async def connected() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.state == "connected"

    await wait_for(connected, timeout=5, what="connected with the device the phone linked")
    assert len(worker.recorder.of(WhatsAppConnected, sid)) == 1


async def test_refs_run_out_then_a_fresh_attempt_works(
    worker: InProcessWorker, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await worker.command(pairing(sid, salon_id))

    async def expired() -> list[PairingExpired]:
        return worker.recorder.of(PairingExpired, sid)

    await wait_for(expired, timeout=8, what="PairingExpired")
    first = worker.recorder.of(QrIssued, sid)
    assert [q.data.seq for q in first] == [1, 2, 3]
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "pairing_expired" and row.qr_payload is None
    assert row.owner is None, "an expired attempt holds no lease"

    await worker.command(pairing(sid, salon_id))

    async def fresh() -> list[QrIssued]:
        return [q for q in worker.recorder.of(QrIssued, sid) if q.data.attempt_id != first[0].data.attempt_id]

    [qr] = await wait_for(fresh, timeout=5, what="a QR of the fresh attempt")
    assert qr.data.seq == 1


async def test_pairing_by_phone_code(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await worker.command(pairing(sid, salon_id, mode="phone", phone="+7 916 000-11-22"))

    async def code() -> list[PairingCodeIssued]:
        return worker.recorder.of(PairingCodeIssued, sid)

    [issued] = await wait_for(code, timeout=5, what="PairingCodeIssued")
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.pairing_code == issued.data.code and row.pairing_phone == "79160001122"
    assert await server.enter_code(sid, issued.data.code.replace("-", ""))

    async def connected() -> list[WhatsAppConnected]:
        return worker.recorder.of(WhatsAppConnected, sid)

    [event] = await wait_for(connected, timeout=5, what="WhatsAppConnected")
    assert event.data.phone == "79160001122"


async def test_pause_keeps_credentials_and_pairing_request_resumes_without_scan(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = await paired(worker, server, sessionmaker)
    await worker.command(RequestPause(salon_id=salon_id, data={"session_id": sid, "reason": "freeze"}))

    async def paused() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.state == "paused" and row.owner is None

    await wait_for(paused, timeout=5, what="paused and released")
    assert await auth_rows(sessionmaker, sid) >= 6
    assert not (await server.describe(sid))["device"]["connected"]

    qrs_before = len(worker.recorder.of(QrIssued, sid))
    await worker.command(pairing(sid, salon_id))

    async def back() -> bool:
        return len(worker.recorder.of(WhatsAppConnected, sid)) == 2

    await wait_for(back, timeout=5, what="connected again")
    assert len(worker.recorder.of(QrIssued, sid)) == qrs_before, "no new QR: resumed from the credentials"


async def test_logout_wipes_credentials_and_tells_the_salon(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = await paired(worker, server, sessionmaker)
    await worker.command(RequestLogout(salon_id=salon_id, data={"session_id": sid, "reason": "uninstall"}))

    async def logged_out() -> list[WhatsAppLoggedOut]:
        return worker.recorder.of(WhatsAppLoggedOut, sid)

    [event] = await wait_for(logged_out, timeout=5, what="WhatsAppLoggedOut")
    assert event.data.reason == "logout requested"
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "logged_out" and row.owner is None and row.phone is None
    assert await auth_rows(sessionmaker, sid) == 0
    assert (await server.describe(sid)) == {"linked": False}
    # A second logout (a duplicated webhook) changes nothing and tells nobody again.
    await worker.command(RequestLogout(salon_id=salon_id, data={"session_id": sid}))

    async def applied() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.applied_seq == row.command_seq and row.owner is None

    await wait_for(applied, timeout=5, what="second logout applied")
    assert len(worker.recorder.of(WhatsAppLoggedOut, sid)) == 1


async def test_removed_on_the_phone_is_terminal(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    _, sid = await paired(worker, server, sessionmaker)
    assert await server.request_drop(sid, 401)

    async def logged_out() -> list[WhatsAppLoggedOut]:
        return worker.recorder.of(WhatsAppLoggedOut, sid)

    [event] = await wait_for(logged_out, timeout=5, what="WhatsAppLoggedOut")
    assert event.data.code == 401
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "logged_out" and row.last_disconnect_code == 401
    assert await auth_rows(sessionmaker, sid) == 0
    assert not worker.recorder.of(WhatsAppDisconnected, sid), "no reconnect attempts after 401"


async def test_replaced_stops_and_keeps_credentials(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    _, sid = await paired(worker, server, sessionmaker)
    connections = (await server.describe(sid))["device"]["connections"]
    assert await server.request_drop(sid, 440)

    async def replaced() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.state == "replaced" and row.owner is None

    await wait_for(replaced, timeout=5, what="replaced")
    [event] = worker.recorder.of(WhatsAppDisconnected, sid)
    assert event.data.code == 440 and event.data.retrying is False
    assert await auth_rows(sessionmaker, sid) >= 6
    # A retry would come within the first backoff step (0.2 s): give it three times that to show up.
    await asyncio.sleep(0.6)
    assert (await server.describe(sid))["device"]["connections"] == connections, "no fight: not reconnected"


async def test_bad_session_wipes_and_requires_a_new_pairing(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    _, sid = await paired(worker, server, sessionmaker)
    assert await server.request_drop(sid, 500)

    async def logged_out() -> list[WhatsAppLoggedOut]:
        return worker.recorder.of(WhatsAppLoggedOut, sid)

    [event] = await wait_for(logged_out, timeout=5, what="WhatsAppLoggedOut")
    assert event.data.code == 500
    assert await auth_rows(sessionmaker, sid) == 0


async def test_transient_drop_reconnects_with_backoff(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    _, sid = await paired(worker, server, sessionmaker)
    assert await server.request_drop(sid, 428)

    async def reconnected() -> bool:
        return len(worker.recorder.of(WhatsAppConnected, sid)) == 2

    await wait_for(reconnected, timeout=5, what="reconnected")
    [event] = worker.recorder.of(WhatsAppDisconnected, sid)
    assert event.data.code == 428 and event.data.retrying is True
    assert 0.15 <= (event.data.retry_in_s or 0) <= 0.25
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "connected" and row.failures == 1


async def test_flapping_connection_produces_a_bounded_number_of_events(
    worker: InProcessWorker, server: PostgresEmulatorServer, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    _, sid = await paired(worker, server, sessionmaker)
    connections_before = (await server.describe(sid))["device"]["connections"]
    drops = 0
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        if await server.request_drop(sid, 428):
            drops += 1
        await asyncio.sleep(0.02)
    disconnected = worker.recorder.of(WhatsAppDisconnected, sid)
    connections = (await server.describe(sid))["device"]["connections"] - connections_before
    # The policy allows 5 connects a minute (FAST_POLICY): 6 s of flapping can't produce more.
    assert connections <= 5
    assert len(disconnected) == drops <= 5
    assert len(worker.recorder.of(WhatsAppConnected, sid)) <= 1 + 5
    steps = [e.data.retry_in_s for e in disconnected]
    assert steps == sorted(steps) or max(steps) >= 2.0 * 0.8, f"the backoff climbs: {steps}"


async def test_a_command_received_by_another_worker_reaches_the_owner(
    make_worker: Callable[..., InProcessWorker],
    server: PostgresEmulatorServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    owner = make_worker()
    other = make_worker()
    owner.start()
    other.start()
    await owner.ready()
    await other.ready()
    salon_id, sid = await paired(owner, server, sessionmaker)

    outcome = await other.command(RequestPause(salon_id=salon_id, data={"session_id": sid}))
    assert outcome.recorded and outcome.owner == owner.worker_id

    async def paused() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.state == "paused"

    await wait_for(paused, timeout=5, what="paused by the owner")
    assert sid not in other.pool.runners


async def test_a_stalled_owner_is_replaced_and_fenced(
    make_worker: Callable[..., InProcessWorker],
    server: PostgresEmulatorServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The owner stops renewing (a partition) but keeps its connection: the other worker takes over from the
    credentials, the server replaces the old connection (440), and the stalled owner writes nothing."""
    first = make_worker(lease_s=2.0, check_s=0.3)
    first.start()
    await first.ready()
    _, sid = await paired(first, server, sessionmaker)
    second = make_worker(lease_s=2.0, check_s=0.3)
    second.start()
    await second.ready()
    qrs = len(first.recorder.of(QrIssued, sid))

    stalled_at = time.monotonic()
    await first.stall()
    # The stalled worker still gets the server's notifications through a listener of its own.
    first.tasks.append(asyncio.create_task(first.listener.run(first.stop)))

    async def taken_over() -> bool:
        row = await session_row(sessionmaker, sid)
        device = (await server.describe(sid))["device"]
        return row is not None and row.owner == second.worker_id and device["connection_owner"] == second.worker_id

    await wait_for(taken_over, timeout=8, what="takeover")
    assert time.monotonic() - stalled_at <= 2.0 + 0.3 + 1.5

    async def first_gave_up() -> bool:
        return not first.engine.is_live(sid) and sid not in first.pool.runners

    await wait_for(first_gave_up, timeout=5, what="the stalled owner to close its connection")
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "connected", "the stale owner's 440 did not overwrite the state"
    assert not first.recorder.of(WhatsAppDisconnected, sid)
    assert not second.recorder.of(WhatsAppConnected, sid), "a silent resume: nobody saw it drop"
    assert len(second.recorder.of(QrIssued, sid)) + len(first.recorder.of(QrIssued, sid)) == qrs, "no new scan"


async def test_a_connection_that_holds_resets_the_backoff(
    make_worker: Callable[..., InProcessWorker],
    server: PostgresEmulatorServer,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    steady = make_worker(
        policy=ConnectionPolicy(Backoff(base_s=0.2, cap_s=2.0, jitter=0.2), max_per_minute=5, stable_after_s=0.8)
    )
    steady.start()
    await steady.ready()
    _, sid = await paired(steady, server, sessionmaker)
    assert await server.request_drop(sid, 503)

    async def back_with_one_failure() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.state == "connected" and row.failures == 1

    await wait_for(back_with_one_failure, timeout=5, what="reconnected after one failure")

    async def reset() -> bool:
        row = await session_row(sessionmaker, sid)
        return row is not None and row.failures == 0

    await wait_for(reset, timeout=5, what="the failure count to reset once the connection held")
    assert await server.request_drop(sid, 503)

    async def second_drop() -> list[WhatsAppDisconnected]:
        return list(steady.recorder.of(WhatsAppDisconnected, sid))

    events = await wait_for(lambda: _at_least(second_drop, 2), timeout=5, what="the second disconnect")
    assert all(0.15 <= (e.data.retry_in_s or 0) <= 0.25 for e in events), "both at the first backoff step"


async def _at_least(probe: Callable[[], Awaitable[list[WhatsAppDisconnected]]], n: int) -> list[WhatsAppDisconnected]:
    found = await probe()
    return found if len(found) >= n else []
