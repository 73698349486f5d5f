"""The load: salon journeys (install → QR → scan → activation → lifecycle webhook) driven over HTTP.

Clients behave as YClients and browsers do: a request that got no answer (connection refused or reset, a
timeout, a 5xx) is sent again, to the next gateway; only an answered 2xx/302 counts as acknowledged. Every
logical operation is recorded in the :class:`~chaos.model.History` with its attempts and outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chaos.model import History, Op
from sandbox.yclients.marketplace_page import connect_location
from shared.bus.broker import Broker
from shared.bus.errors import PublishError
from shared.db.models import Company, WhatsAppSession
from shared.messages import WhatsAppConnected, session_id_for

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT_S = 10.0
WATCH_INTERVAL_S = 0.4
# A QR not shown this long after asking for it (or an attempt that ran out) is asked for again.
QR_PATIENCE_S = 20.0
LIFECYCLE_EVENTS = ("freeze", "uninstall", "payment")


# ---- what the load looks like -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    """Shares of the journeys: install only, manual activation click, lifecycle webhooks and their repeats."""

    install_only: float = 0.2
    manual_activate: float = 0.3
    webhook: float = 0.6
    repeat_webhook: float = 0.3
    events: tuple[str, ...] = LIFECYCLE_EVENTS


@dataclass(frozen=True)
class Plan:
    """What one salon's admin (and later YClients) will do."""

    salon_id: int
    install_only: bool = False
    manual_activate: bool = False
    webhook: str | None = None
    deliveries: int = 1


def make_plans(salon_ids: Sequence[int], mix: Mix, rng: random.Random) -> list[Plan]:
    """One plan per salon, drawn from `mix`."""
    plans = []
    for salon_id in salon_ids:
        if rng.random() < mix.install_only:
            plans.append(Plan(salon_id, install_only=True))
            continue
        webhook = rng.choice(mix.events) if mix.events and rng.random() < mix.webhook else None
        plans.append(
            Plan(
                salon_id,
                manual_activate=rng.random() < mix.manual_activate,
                webhook=webhook,
                deliveries=2 if webhook and rng.random() < mix.repeat_webhook else 1,
            )
        )
    return plans


# ---- what the harness sees of the state -------------------------------------------------------------------


@dataclass(frozen=True)
class SessionView:
    """The part of a `whatsapp_sessions` row the phone needs."""

    state: str
    qr_payload: str | None
    attempt_id: str | None


class Watcher:
    """Polls PostgreSQL (directly, not through the proxy) for the statuses and QR codes of the salons in play."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.salons: set[int] = set()
        self.statuses: dict[int, str] = {}
        self.sessions: dict[int, SessionView] = {}
        self._changed = asyncio.Event()
        self.errors = 0

    def watch(self, salon_id: int) -> None:
        """Include a salon in the polls."""
        self.salons.add(salon_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set."""
        while not stop.is_set():
            try:
                await self.poll()
            except Exception as exc:
                # The harness's own database connection may be cut in the real-restart variant: poll again.
                self.errors += 1
                log.debug("watcher poll failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=WATCH_INTERVAL_S)

    async def poll(self) -> None:
        """Read the statuses and sessions once."""
        ids = list(self.salons)
        if not ids:
            return
        async with self.sessionmaker() as session:
            companies = await session.execute(
                select(Company.yclients_id, Company.integration_status).where(Company.yclients_id.in_(ids))
            )
            self.statuses.update({int(r.yclients_id): r.integration_status for r in companies})
            rows = await session.execute(
                select(
                    WhatsAppSession.salon_id,
                    WhatsAppSession.state,
                    WhatsAppSession.qr_payload,
                    WhatsAppSession.attempt_id,
                ).where(WhatsAppSession.salon_id.in_(ids))
            )
            self.sessions.update({int(r.salon_id): SessionView(r.state, r.qr_payload, r.attempt_id) for r in rows})
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        """Wait for the next poll (at most `timeout`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)

    async def wait_status(self, salon_id: int, statuses: Collection[str], timeout: float) -> str | None:
        """The salon's status once it is one of `statuses` (None after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.statuses.get(salon_id)
            if status in statuses:
                return status
            await self.changed(WATCH_INTERVAL_S * 3)
        return None


# ---- the clients ------------------------------------------------------------------------------------------


@dataclass
class Endpoints:
    """Where the load goes: every gateway, every whatsapp worker's phone endpoint."""

    gateways: list[str]
    phones: list[str]


Send = Callable[[str], Awaitable[httpx.Response]]


class Client:
    """Sends one logical operation until it is answered, spreading attempts over the instances of a service."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoints: Callable[[], Endpoints],
        history: History,
        *,
        partner_token: str,
        application_id: int,
        op_timeout_s: float,
        rng: random.Random,
    ) -> None:
        self.http = http
        self.endpoints = endpoints
        self.history = history
        self.partner_token = partner_token
        self.application_id = application_id
        self.op_timeout_s = op_timeout_s
        self.rng = rng

    async def call(
        self,
        op: Op,
        send: Send,
        bases: Callable[[], list[str]],
        *,
        ok: Collection[int],
        retry_on: Collection[int] = (),
        before_retry: Callable[[], Awaitable[None]] | None = None,
    ) -> httpx.Response | None:
        """Attempt `send(base)` until an `ok` status, a refusal (other 4xx), or the operation's deadline."""
        deadline = time.monotonic() + self.op_timeout_s
        delay = 0.25
        turn = self.rng.randrange(1000)
        while time.monotonic() < deadline:
            candidates = bases()
            base = candidates[turn % len(candidates)]
            turn += 1
            try:
                response = await send(base)
            except httpx.HTTPError as exc:
                op.attempt(base, type(exc).__name__)
                op.status, op.error = None, f"no answer: {type(exc).__name__}"
            else:
                op.attempt(base, str(response.status_code))
                op.status = response.status_code
                if response.status_code in ok:
                    return response
                if response.status_code < 500 and response.status_code not in retry_on:
                    op.error = f"refused: HTTP {response.status_code} {response.text[:200]}"
                    return None
                op.error = f"HTTP {response.status_code}"
            await asyncio.sleep(delay * (1 + self.rng.random() / 2))
            delay = min(delay * 2, 2.0)
            if before_retry is not None:
                await before_retry()
        op.error = f"gave up after {op.attempts} attempt(s): {op.error}"
        return None

    def gateways(self) -> list[str]:
        """Every gateway (the load balancer's pool)."""
        return self.endpoints().gateways

    async def install(self, salon_id: int) -> str | None:
        """The admin's «Подключить»: the signed install redirect; returns the onboarding token on a 302."""
        op = self.history.new("install", salon_id)

        async def send(base: str) -> httpx.Response:
            location, _ = connect_location(
                {"salon_id": str(salon_id)}, partner_token=SecretStr(self.partner_token), gateway_url=base
            )
            return await self.http.get(location, timeout=ATTEMPT_TIMEOUT_S)

        response = await self.call(op, send, self.gateways, ok=(302,))
        if response is None:
            return None
        tokens = parse_qs(urlsplit(response.headers.get("location", "")).query).get("token", [])
        op.ack(response.status_code)
        return tokens[0] if tokens else None

    async def request_qr(self, salon_id: int, token: str) -> bool:
        """The onboarding page asks for a QR code."""
        op = self.history.new("pair", salon_id)

        async def send(base: str) -> httpx.Response:
            return await self.http.post(
                f"{base}/marketplace/api/qr",
                json={"salon_id": salon_id},
                headers={"Authorization": f"Bearer {token}"},
                timeout=ATTEMPT_TIMEOUT_S,
            )

        response = await self.call(op, send, self.gateways, ok=(202,))
        if response is not None:
            op.ack(response.status_code)
        return response is not None

    async def activate(self, salon_id: int, token: str) -> bool:
        """The admin clicks «Активировать» (seed-compatible body `{token}`)."""
        op = self.history.new("activate", salon_id)

        async def send(base: str) -> httpx.Response:
            return await self.http.post(
                f"{base}/marketplace/activate", json={"token": token}, timeout=ATTEMPT_TIMEOUT_S
            )

        response = await self.call(op, send, self.gateways, ok=(202,))
        if response is not None:
            op.ack(response.status_code)
        return response is not None

    async def webhook(self, salon_id: int, event: str) -> bool:
        """YClients sends a lifecycle webhook (retried on no answer, as YClients does)."""
        op = self.history.new("webhook", salon_id, event=event)
        body = {
            "salon_id": salon_id,
            "application_id": self.application_id,
            "event": event,
            "partner_token": self.partner_token,
        }

        async def send(base: str) -> httpx.Response:
            return await self.http.post(f"{base}/webhook/yclients", json=body, timeout=ATTEMPT_TIMEOUT_S)

        response = await self.call(op, send, self.gateways, ok=(200, 201, 202, 204))
        if response is None:
            return False
        message_id: Any = None
        with contextlib.suppress(ValueError):
            message_id = response.json().get("message_id")
        op.ack(response.status_code, message_id if isinstance(message_id, str) else None)
        return True


# ---- the journeys -----------------------------------------------------------------------------------------


@dataclass
class LoadContext:
    """What journeys share."""

    client: Client
    watcher: Watcher
    history: History
    broker: Broker
    whatsapp_worker: bool
    activation_timeout_s: float
    rng: random.Random
    # Webhooks wait for the gate (e.g. an outage beginning), then up to this long, so they spread over it.
    webhook_gate: asyncio.Event | None = None
    webhook_spread_s: float = 0.0


class Journey:
    """One salon from «Подключить» to its lifecycle webhook."""

    def __init__(self, ctx: LoadContext, plan: Plan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.skipped: str | None = None

    async def run(self) -> None:
        """Walk the plan; stop where an operation was never acknowledged."""
        ctx, plan, salon_id = self.ctx, self.plan, self.plan.salon_id
        ctx.watcher.watch(salon_id)
        token = await ctx.client.install(salon_id)
        if token is None or plan.install_only:
            return
        linked = await (self.scan(token) if ctx.whatsapp_worker else self.synthetic_connect())
        if not linked:
            self.skipped = "whatsapp never linked"
            return
        if plan.manual_activate:
            await ctx.client.activate(salon_id, token)
        if plan.webhook is None:
            return
        if await ctx.watcher.wait_status(salon_id, ("active",), ctx.activation_timeout_s) is None:
            self.skipped = f"never active, {plan.webhook} not sent"
            return
        if ctx.webhook_gate is not None:
            await ctx.webhook_gate.wait()
            await asyncio.sleep(ctx.rng.uniform(0.0, ctx.webhook_spread_s))
        for _ in range(plan.deliveries):
            await ctx.client.webhook(salon_id, plan.webhook)

    async def scan(self, token: str) -> bool:
        """Ask for a QR, then scan the one currently shown with the emulated phone until it links."""
        ctx, salon_id = self.ctx, self.plan.salon_id
        if not await ctx.client.request_qr(salon_id, token):
            return False
        op = ctx.history.new("scan", salon_id)
        session_id = session_id_for(salon_id)
        deadline = time.monotonic() + ctx.client.op_timeout_s
        asked_at = time.monotonic()
        tried: set[str] = set()
        delay = 0.25
        while time.monotonic() < deadline:
            view = ctx.watcher.sessions.get(salon_id)
            if view is not None and view.state == "connected":
                # Linked by an earlier attempt whose answer was lost: done, though never acknowledged.
                return True
            expired = view is not None and view.state == "pairing_expired"
            if expired or time.monotonic() - asked_at > QR_PATIENCE_S:
                if not await ctx.client.request_qr(salon_id, token):
                    break
                asked_at = time.monotonic()
                tried.clear()
            payload = view.qr_payload if view is not None and view.state == "pairing" else None
            if payload is None or payload in tried:
                await ctx.watcher.changed(1.0)
                continue
            phones = ctx.client.endpoints().phones
            phone = phones[op.attempts % len(phones)]
            ref = payload.rsplit("#", 1)[-1].split(",", 1)[0][-8:]
            try:
                response = await ctx.client.http.post(
                    f"{phone}/emulator/scan", json={"session_id": session_id, "qr": payload}, timeout=ATTEMPT_TIMEOUT_S
                )
            except httpx.HTTPError as exc:
                op.attempt(f"{phone} (QR …{ref})", type(exc).__name__)
                op.status, op.error = None, f"no answer: {type(exc).__name__}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            op.attempt(f"{phone} (QR …{ref})", str(response.status_code))
            op.status = response.status_code
            if response.status_code == 200:
                op.ack(200)
                return True
            if response.status_code == 409:
                # Stale (a newer QR replaced it, or the owner changed): scan the next one shown.
                tried.add(payload)
                continue
            if response.status_code < 500:
                op.error = f"refused: HTTP {response.status_code} {response.text[:200]}"
                return False
            await asyncio.sleep(delay)
        op.error = op.error or "no valid QR code shown in time"
        return False

    async def synthetic_connect(self) -> bool:
        """No whatsapp worker yet: the harness publishes `whatsapp.connected` itself, once the salon is registered."""
        ctx, salon_id = self.ctx, self.plan.salon_id
        op = ctx.history.new("scan", salon_id, synthetic=True)
        deadline = time.monotonic() + ctx.client.op_timeout_s
        if await ctx.watcher.wait_status(salon_id, ("pending_whatsapp",), ctx.client.op_timeout_s) is None:
            op.error = "salon never registered"
            return False
        msg = WhatsAppConnected(
            salon_id=salon_id, data={"session_id": session_id_for(salon_id), "phone": f"7900{salon_id % 10**7:07d}"}
        )
        while time.monotonic() < deadline:
            try:
                await ctx.broker.publish(msg)
            except PublishError as exc:
                op.attempt("broker", "not confirmed")
                op.error = str(exc)
                await asyncio.sleep(0.5)
                continue
            op.attempt("broker", "confirmed")
            op.ack(None, str(msg.id))
            return True
        return False


@dataclass
class LoadReport:
    """How the load went (for the notes)."""

    journeys: int
    unfinished: int
    skipped: list[str]
    seconds: float


async def run_load(ctx: LoadContext, plans: Sequence[Plan], *, spacing_s: float, deadline_s: float) -> LoadReport:
    """Start one journey every `spacing_s` and wait for all of them (cancelling what is left at the deadline)."""
    started = time.monotonic()
    journeys = [Journey(ctx, plan) for plan in plans]
    tasks: list[asyncio.Task[None]] = []
    for journey in journeys:
        tasks.append(asyncio.create_task(journey.run()))
        await asyncio.sleep(spacing_s)
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline_s - (time.monotonic() - started)))
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("journey failed: %r", task.exception())
    return LoadReport(
        journeys=len(journeys),
        unfinished=len(pending),
        skipped=[f"salon {j.plan.salon_id}: {j.skipped}" for j in journeys if j.skipped],
        seconds=time.monotonic() - started,
    )
