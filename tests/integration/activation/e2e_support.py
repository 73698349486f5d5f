"""Helpers for the activation end-to-end tests: the stack, the admin's clicks, WhatsApp linking, a message tap."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from aio_pika.abc import AbstractChannel, AbstractQueue
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import topology as t
from shared.bus.broker import Broker
from shared.db.models import Company, WhatsAppSession
from shared.messages import Message, WhatsAppConnected, decode, session_id_for
from tests.support.processes import ROOT, Stack, running_stack
from tests.support.wait import wait_for

Sessions = async_sessionmaker[AsyncSession]
# The WhatsApp worker is built by another engineer; until it exists the tests publish `whatsapp.connected`.
WHATSAPP_WORKER = (ROOT / "services" / "whatsapp" / "__main__.py").exists()
# Short retries so a test sees them all; a client timeout short enough for "lost response" tests.
ACTIVATION_ENV = {"RETRY_DELAYS_MS": "[300,600,1200]", "YCLIENTS_TIMEOUT_S": "2"}
REGISTRATION_ENV = {"RETRY_DELAYS_MS": "[300,600,1200,2400]"}


@contextmanager
def activation_stack(test_env: dict[str, str], label: str, *, whatsapp: bool = True) -> Iterator[Stack]:
    """Sandbox, gateway, registration, activation (and the WhatsApp worker once it exists) as processes."""
    with running_stack(test_env, label) as stack:
        stack.start("sandbox")
        stack.start("gateway")
        stack.start("registration", RETRY_DELAYS_MS=REGISTRATION_ENV["RETRY_DELAYS_MS"])
        stack.start(
            "activation",
            RETRY_DELAYS_MS=ACTIVATION_ENV["RETRY_DELAYS_MS"],
            YCLIENTS_TIMEOUT_S=ACTIVATION_ENV["YCLIENTS_TIMEOUT_S"],
        )
        if whatsapp and WHATSAPP_WORKER:
            stack.start("whatsapp")
        yield stack


def sha256(value: str) -> str:
    """Hex SHA-256 of a string (how the api_key is stored)."""
    return hashlib.sha256(value.encode()).hexdigest()


async def click_connect(http: httpx.AsyncClient, stack: Stack, salon_ids: Sequence[int]) -> str:
    """The admin's «Подключить» on the sandbox marketplace → our redirect; returns the onboarding token."""
    ids = ",".join(str(s) for s in salon_ids)
    to_us = await http.get(f"{stack.url('sandbox')}/marketplace/connect", params={"salon_ids": ids})
    assert to_us.status_code == 302, to_us.text
    redirect = await http.get(to_us.headers["location"])
    assert redirect.status_code == 302, redirect.text
    onboarding = urlsplit(redirect.headers["location"])
    assert onboarding.path == "/marketplace/onboarding"
    return parse_qs(onboarding.query)["token"][0]


async def company(sm: Sessions, salon_id: int) -> Company | None:
    """The salon's company row, if registered."""
    async with sm() as s:
        return (await s.execute(select(Company).where(Company.yclients_id == salon_id))).scalar_one_or_none()


async def wait_registered(sm: Sessions, salon_ids: Sequence[int], timeout: float = 20) -> None:
    """Until registration created every salon's company."""

    async def all_there() -> bool:
        async with sm() as s:
            count = (await s.execute(select(func.count()).where(Company.yclients_id.in_(list(salon_ids))))).scalar_one()
        return int(count) == len(salon_ids)

    await wait_for(all_there, timeout=timeout, what=f"{len(salon_ids)} companies registered")


async def wait_status(sm: Sessions, salon_id: int, status: str, timeout: float = 20) -> Company:
    """Until the salon's integration_status is `status`."""

    async def reached() -> Company | None:
        row = await company(sm, salon_id)
        return row if row is not None and row.integration_status == status else None

    found = await wait_for(reached, timeout=timeout, what=f"salon {salon_id} {status}")
    assert found is not None
    return found


async def link_whatsapp(
    http: httpx.AsyncClient, stack: Stack, broker: Broker, sm: Sessions, salon_id: int, token: str
) -> None:
    """The admin links WhatsApp: QR → scan with the emulator phone, or (no WhatsApp worker yet) the event itself."""
    if not WHATSAPP_WORKER:
        session_id = session_id_for(salon_id)
        await broker.publish(
            WhatsAppConnected(salon_id=salon_id, data={"session_id": session_id, "phone": "79001234567"})
        )
        return
    asked = await http.post(
        f"{stack.url('gateway')}/marketplace/api/qr",
        json={"salon_id": salon_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert asked.status_code == 202, asked.text

    async def current_qr() -> str | None:
        async with sm() as s:
            row = await s.get(WhatsAppSession, session_id_for(salon_id))
            return row.qr_payload if row is not None else None

    payload = await wait_for(current_qr, timeout=20, what="a QR code issued")
    scanned = await http.post(
        f"{stack.url('whatsapp')}/emulator/scan", json={"session_id": session_id_for(salon_id), "qr": payload}
    )
    assert scanned.status_code == 200, scanned.text


async def wait_session_state(sm: Sessions, salon_id: int, state: str, timeout: float = 20) -> None:
    """Until the salon's WhatsApp session (run by the WhatsApp worker) is in `state`."""

    async def reached() -> bool:
        async with sm() as s:
            row = await s.get(WhatsAppSession, session_id_for(salon_id), populate_existing=True)
            return row is not None and row.state == state

    await wait_for(reached, timeout=timeout, what=f"WhatsApp session of {salon_id} {state}")


async def sandbox_calls(http: httpx.AsyncClient, stack: Stack, endpoint: str, salon_id: int) -> list[dict[str, Any]]:
    """The calls the sandbox received on one endpoint about one salon."""
    calls: list[dict[str, Any]] = (await http.get(f"{stack.url('sandbox')}/__sandbox/calls")).json()
    mine = []
    for call in calls:
        if call["endpoint"] != endpoint:
            continue
        body = call.get("body")
        about = body.get("salon_id") if isinstance(body, dict) else None
        if about == salon_id or f"/{salon_id}/" in call["path"] or call["path"].endswith(f"/{salon_id}"):
            mine.append(call)
    return mine


async def sandbox_install(http: httpx.AsyncClient, stack: Stack, salon_id: int) -> dict[str, Any] | None:
    """The sandbox's install of our app on the salon (with the api_key it received)."""
    installs: list[dict[str, Any]] = (await http.get(f"{stack.url('sandbox')}/__sandbox/installs")).json()
    return next((i for i in installs if i["salon_id"] == salon_id), None)


async def fault(http: httpx.AsyncClient, stack: Stack, **spec: Any) -> None:
    """Switch a sandbox fault on."""
    response = await http.post(f"{stack.url('sandbox')}/__sandbox/faults", json=spec)
    assert response.status_code == 201, response.text


async def replay_cli(env: dict[str, str], *args: str) -> str:
    """`python -m shared.bus.replay ...` (what `make replay` runs) against this session's vhost."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.bus.replay",
        *args,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


class Tap:
    """A private queue bound to some routing keys: everything published with them, kept for assertions."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self.channel = channel
        self.queue = queue
        self.seen: list[Message] = []

    @classmethod
    async def open(cls, broker: Broker, keys: Sequence[str]) -> Tap:
        """Declare and bind the queue."""
        channel = await broker.open_channel(publisher_confirms=False)
        await t.declare_exchange(channel)
        queue = await channel.declare_queue(exclusive=True)
        for key in keys:
            await queue.bind(t.EXCHANGE, routing_key=key)
        return cls(channel, queue)

    async def messages(self, kind: type[Message], salon_id: int) -> list[Message]:
        """The messages of one type about one salon received so far."""
        while (incoming := await self.queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            self.seen.append(decode(incoming.body))
        return [m for m in self.seen if isinstance(m, kind) and m.salon_id == salon_id]

    async def close(self) -> None:
        """Drop the queue with its channel."""
        await self.channel.close()


def workers_log(stack: Stack) -> str:
    """Every log line of every process of the stack."""
    return "\n".join(p.log_text() for p in stack.running)
