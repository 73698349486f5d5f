"""B5 — resources: RSS of every idle service; the WhatsApp worker with many sessions pairing at once."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage

from bench.harness import BenchEnv, RunContext, bench_env, poll, service_exists
from bench.model import BenchResult
from bench.procinfo import mib, rss_bytes
from bench.rawhttp import Connection, Request
from bench.stats import Summary
from shared.bus.topology import EXCHANGE, declare_exchange
from shared.messages import Message, RequestPairing, WhatsAppConnected, decode, session_id_for
from tests.support.processes import ROOT, ServiceProcess

FIRST_SALON = 30_000_000
SCAN_CONNECTIONS = 50
SCAN_TRIES = 3
SETTLE_S = 3.0


@dataclass
class Pairing:
    """Times of one session's scan and connection (perf_counter seconds)."""

    scanned_at: float | None = None
    connected_at: float | None = None
    tries: int = 0
    statuses: list[int] = field(default_factory=list)


class PeakRss:
    """Samples a process's RSS in the background and keeps the highest value."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid) or 0)
            await asyncio.sleep(0.2)

    def __enter__(self) -> PeakRss:
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.peak = max(self.peak, rss_bytes(self.pid) or 0)


async def _current_qr(env: BenchEnv, session_id: str) -> str:
    value = await env.scalar("SELECT qr_payload FROM whatsapp_sessions WHERE session_id = :sid", sid=session_id)
    return "" if value is None else str(value)


async def _current_qrs(env: BenchEnv, first: int, n: int) -> dict[str, str]:
    rows = await env.sql(
        "SELECT session_id, qr_payload FROM whatsapp_sessions"
        " WHERE qr_payload IS NOT NULL AND salon_id >= :lo AND salon_id < :hi",
        lo=first,
        hi=first + n,
    )
    return {str(sid): str(qr) for sid, qr in rows}


async def _scan_all(env: BenchEnv, whatsapp: ServiceProcess, pairings: dict[str, Pairing], first: int) -> None:
    """Every session's current QR scanned by the emulated phone, `SCAN_CONNECTIONS` at a time."""
    qrs = await _current_qrs(env, first, len(pairings))
    pending: asyncio.Queue[str] = asyncio.Queue()
    for session_id in pairings:
        pending.put_nowait(session_id)
    host = f"127.0.0.1:{whatsapp.port}"

    async def phone() -> None:
        conn = Connection("127.0.0.1", whatsapp.port)
        try:
            while not pending.empty():
                session_id = pending.get_nowait()
                record = pairings[session_id]
                while record.tries < SCAN_TRIES:
                    record.tries += 1
                    body = json.dumps({"session_id": session_id, "qr": qrs.get(session_id, "")}).encode()
                    request = Request.build(
                        "POST", "/emulator/scan", host=host, body=body, headers={"Content-Type": "application/json"}
                    )
                    sent = time.perf_counter()
                    status, _ = await conn.send(request)
                    record.statuses.append(status)
                    if status == 200:
                        record.scanned_at = sent
                        break
                    # Stale (the QR rotated meanwhile): read the current one, as a person would rescan.
                    qrs[session_id] = await _current_qr(env, session_id)
        finally:
            await conn.close()

    await asyncio.gather(*(phone() for _ in range(SCAN_CONNECTIONS)))


async def run(ctx: RunContext) -> BenchResult:
    """Run B5."""
    result = BenchResult("B5", "Resources: idle RSS of every service; WhatsApp worker with sessions pairing at once")
    present = [s for s in ("gateway", "registration", "activation", "whatsapp") if service_exists(s)]
    n = ctx.sizes.pairing_sessions
    idle: dict[str, float | None] = {}
    async with bench_env("B5", ctx) as env:
        processes = {"sandbox": await asyncio.to_thread(env.start, "sandbox")}
        for name in present:
            processes[name] = await asyncio.to_thread(env.start, name)
        await asyncio.sleep(SETTLE_S)
        for name, process in processes.items():
            idle[name] = mib(rss_bytes(process.proc.pid))
            result.figure(f"idle RSS: {name}", idle[name], "MiB")
        if "whatsapp" not in processes:
            result.notes.append("services/whatsapp is not built yet: no pairing figures")
        else:
            # The pairing run gets the machine: the services it does not need are stopped.
            for name in ("activation", "registration"):
                if name in processes:
                    await asyncio.to_thread(processes[name].stop)
            await _pairing(env, processes["whatsapp"], n, result, ctx)

    result.method = [
        f"Every service started as deployed on a private database and vhost, left idle for {SETTLE_S:g} s, then its "
        "resident set size read from /proc (VmRSS of the process and its children).",
        f"Pairing: {n} `whatsapp.pairing_requested` commands published at once (what the gateway publishes for "
        "«Получить QR»), the worker (emulator engine) opens every session and issues its first QR; then the "
        f"emulated phone scans each session's current QR through `POST /emulator/scan` ({SCAN_CONNECTIONS} "
        "connections from the bench process, a stale QR re-read and rescanned, at most "
        f"{SCAN_TRIES} tries). Scan → connected: from sending the accepted scan to the `whatsapp.connected` event "
        "arriving on a queue bound in the bench process (same clock).",
        "Activation and registration are stopped for the pairing run; the gateway stays (its live-update queue "
        "receives the QR and connected events, as deployed). RSS of the WhatsApp worker sampled every 0.2 s.",
    ]
    return result


async def _pairing(env: BenchEnv, whatsapp: ServiceProcess, n: int, result: BenchResult, ctx: RunContext) -> None:
    salons = range(FIRST_SALON, FIRST_SALON + n)
    pairings = {session_id_for(s): Pairing() for s in salons}
    channel = await env.broker.open_channel(publisher_confirms=False)
    await declare_exchange(channel)
    tap = await channel.declare_queue(exclusive=True)
    await tap.bind(EXCHANGE, routing_key=WhatsAppConnected.ROUTING_KEY)

    async def on_connected(incoming: AbstractIncomingMessage) -> None:
        arrived = time.perf_counter()
        msg = decode(incoming.body)
        if isinstance(msg, WhatsAppConnected) and msg.data.session_id in pairings:
            record = pairings[msg.data.session_id]
            record.connected_at = record.connected_at or arrived
        await incoming.ack()

    await tap.consume(on_connected)
    pid = whatsapp.proc.pid
    before = mib(rss_bytes(pid))
    started = time.perf_counter()
    commands: list[Message] = [
        RequestPairing(salon_id=s, data={"session_id": session_id_for(s), "mode": "qr"}) for s in salons
    ]
    with PeakRss(pid) as issuing:
        await env.broker.publish_many(commands)

        async def all_issued() -> bool:
            return len(await _current_qrs(env, FIRST_SALON, n)) == n

        await poll(all_issued, timeout=60 + n / 10, interval=0.2, what=f"{n} QR codes issued")
    issued_s = time.perf_counter() - started
    pairing_rss = mib(rss_bytes(pid))
    profiler = ctx.profiler()
    recording = profiler.start(pid, "whatsapp-pairing") if profiler is not None else None
    with PeakRss(pid) as scanning:
        scan_started = time.perf_counter()
        await _scan_all(env, whatsapp, pairings, FIRST_SALON)

        async def all_connected() -> bool:
            return all(p.connected_at is not None for p in pairings.values() if p.scanned_at is not None)

        try:
            await poll(all_connected, timeout=60 + n / 20, interval=0.1, what="every scanned session connected")
        except TimeoutError as exc:
            result.notes.append(str(exc))
        all_done = time.perf_counter() - scan_started
    if profiler is not None and recording is not None:
        profile = await asyncio.to_thread(
            profiler.finish,
            recording,
            label=f"ours: whatsapp worker, {n} sessions scanned and connecting",
            root=str(ROOT),
            duration_s=all_done,
            stop=True,
        )
        if profile is not None:
            ctx.findings += profile.markdown()
    connected_rss = mib(rss_bytes(pid))
    await channel.close()
    latencies = [
        p.connected_at - p.scanned_at
        for p in pairings.values()
        if p.scanned_at is not None and p.connected_at is not None
    ]
    summary = Summary.of(latencies)
    scanned = sum(1 for p in pairings.values() if p.scanned_at is not None)
    stale = sum(1 for p in pairings.values() for s in p.statuses if s == 409)
    result.figure("whatsapp RSS before pairing", before, "MiB", "idle, no sessions")
    result.figure(
        f"whatsapp RSS with {n} sessions pairing",
        pairing_rss,
        "MiB",
        f"every first QR issued {issued_s:.1f} s after the commands",
    )
    result.figure("whatsapp peak RSS while issuing QRs", mib(issuing.peak), "MiB")
    result.figure("whatsapp peak RSS while scanning/connecting", mib(scanning.peak), "MiB")
    result.figure(f"whatsapp RSS with {len(latencies)} sessions connected", connected_rss, "MiB")
    result.figure("sessions scanned (200)", float(scanned), "sessions", f"{stale} stale-QR answers (409) rescanned")
    result.figure(
        "sessions connected", float(len(latencies)), "sessions", f"all within {all_done:.1f} s of the first scan"
    )
    result.figure(
        "pairings completed per second", len(latencies) / all_done if all_done else None, "sessions/s", "burst drain"
    )
    result.figure("scan → connected p50", None if summary.p50 is None else summary.p50 * 1000, "ms")
    result.figure("scan → connected p99", None if summary.p99 is None else summary.p99 * 1000, "ms")
    result.figure("scan → connected max", None if summary.max is None else summary.max * 1000, "ms")
    if latencies and before is not None and pairing_rss is not None:
        result.figure(
            "RSS per pairing session", (pairing_rss - before) * 1024 / n, "KiB", "(pairing − idle) / sessions"
        )
    if len(latencies) < n:
        result.notes.append(f"only {len(latencies)} of {n} sessions connected")
