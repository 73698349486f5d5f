"""Sessions survive their worker: SIGKILL the owner while another worker runs, restart the only worker.

Lease 3 s, checked every 1 s: a dead owner's sessions are claimed within 3 + 1 = 4 s (services/whatsapp/
ownership.py) and resumed from the credentials in PostgreSQL — no QR, no scan.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.messages import PairingExpired, QrIssued, RequestPairing, WhatsAppConnected
from tests.integration.whatsapp.helpers import EventTap, event_tap, new_session, park_created, session_row
from tests.support.processes import ServiceProcess, Stack, free_port, running_stack
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e

LEASE_S, CHECK_S = 3.0, 1.0
# The bound the design promises, plus what a resume and our polling take.
TAKEOVER_BOUND_S = LEASE_S + CHECK_S
SLACK_S = 1.5


def start_worker(stack: Stack, *, port: int | None = None) -> ServiceProcess:
    """A whatsapp worker with the short lease (and QRs that live long enough not to matter)."""
    return stack.start(
        "whatsapp",
        port=port,
        WHATSAPP_LEASE_S=str(LEASE_S),
        WHATSAPP_LEASE_CHECK_S=str(CHECK_S),
        WHATSAPP_EMULATOR_QR_FIRST_S="20",
    )


@pytest.fixture(scope="module", autouse=True)
async def _park_sessions(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """After the module's workers stopped, park its sessions so other modules' workers don't resume them."""
    yield
    await park_created(sessionmaker)


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str]) -> Iterator[Stack]:
    with running_stack(test_env, "whatsapp_failover") as s:
        yield s


@pytest.fixture(scope="module")
async def tap(publisher: Broker) -> AsyncIterator[EventTap]:
    async with event_tap(publisher) as t:
        yield t


def worker_id_of(process: ServiceProcess, owner: str | None) -> bool:
    """Whether the lease owner ``host:pid:suffix`` is this process."""
    return owner is not None and owner.split(":")[1] == str(process.proc.pid)


async def pair(publisher: Broker, tap: EventTap, worker: ServiceProcess, salon_id: int, session_id: str) -> None:
    await publisher.publish(RequestPairing(salon_id=salon_id, data={"session_id": session_id}))
    [qr] = await tap.wait_for(QrIssued, session_id)
    async with httpx.AsyncClient(base_url=worker.url, timeout=5) as phone:
        scan = await phone.post("/emulator/scan", json={"session_id": session_id, "qr": qr.data.payload})
    assert scan.status_code == 200, scan.text
    await tap.wait_for(WhatsAppConnected, session_id)


async def connected_in(sessionmaker: async_sessionmaker[AsyncSession], worker: ServiceProcess, session_id: str) -> bool:
    """The row says connected and owned by ``worker``, and the emulated server has its connection."""
    row = await session_row(sessionmaker, session_id)
    if row is None or row.state != "connected" or not worker_id_of(worker, row.owner):
        return False
    async with httpx.AsyncClient(base_url=worker.url, timeout=5) as client:
        device = (await client.get(f"/emulator/sessions/{session_id}")).json().get("device", {})
    return bool(device.get("connected")) and device.get("connection_owner") == row.owner


async def test_sigkill_of_the_owner_moves_its_sessions_to_the_other_worker_without_a_scan(
    stack: Stack, publisher: Broker, tap: EventTap, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    first = start_worker(stack)
    second = start_worker(stack, port=free_port())
    sessions = [new_session() for _ in range(4)]
    for salon_id, sid in sessions:
        await pair(publisher, tap, first, salon_id, sid)
    owners = {sid: (await session_row(sessionmaker, sid)).owner for _, sid in sessions}  # type: ignore[union-attr]
    # The queue spreads commands over both workers; kill the owner of the first session.
    victim = first if worker_id_of(first, owners[sessions[0][1]]) else second
    survivor = second if victim is first else first
    moved = [sid for _, sid in sessions if worker_id_of(victim, owners[sid])]
    qrs_before = len(tap.messages)

    victim.kill()
    killed_at = time.monotonic()

    async def all_moved() -> bool:
        return all([await connected_in(sessionmaker, survivor, sid) for sid in moved])

    await wait_for(all_moved, timeout=TAKEOVER_BOUND_S + 10, what="takeover by the surviving worker")
    took = time.monotonic() - killed_at
    assert took <= TAKEOVER_BOUND_S + SLACK_S, f"takeover took {took:.1f}s, bound {TAKEOVER_BOUND_S}s"
    for _, sid in sessions:
        assert not [
            m
            for m in tap.messages[qrs_before:]
            if isinstance(m, QrIssued | PairingExpired) and m.data.session_id == sid
        ], "no new pairing: resumed from the stored credentials"
    assert not [m for m in tap.messages[qrs_before:] if isinstance(m, WhatsAppConnected)], (
        "a silent resume: the session never looked disconnected to anyone"
    )
    assert "session claimed" in survivor.log_text()


async def test_restarting_the_only_worker_brings_connected_sessions_back(
    stack: Stack, publisher: Broker, tap: EventTap, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for process in stack.running:
        process.stop()
    only = start_worker(stack, port=free_port())
    salon_id, sid = new_session()
    await pair(publisher, tap, only, salon_id, sid)
    seen = len(tap.messages)

    assert only.stop() == 0, "graceful shutdown on SIGTERM"
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.owner is None, "released on shutdown, so a new worker needn't wait"
    restarted = start_worker(stack, port=free_port())
    started = time.monotonic()
    await wait_for(lambda: connected_in(sessionmaker, restarted, sid), timeout=10, what="resumed after restart")
    assert time.monotonic() - started <= CHECK_S + SLACK_S
    assert not [
        m for m in tap.messages[seen:] if getattr(m.data, "session_id", None) == sid and isinstance(m, QrIssued)
    ]

    # After a crash (no release) the restarted worker waits out the dead one's lease, then resumes.
    restarted.kill()
    again = start_worker(stack, port=free_port())
    started = time.monotonic()
    await wait_for(lambda: connected_in(sessionmaker, again, sid), timeout=15, what="resumed after a crash")
    assert time.monotonic() - started <= TAKEOVER_BOUND_S + SLACK_S
