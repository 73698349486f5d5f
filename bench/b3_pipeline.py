"""B3 — pipeline: `registration.requested` published in bulk → every company persisted, vs a plain consumer loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from bench.harness import BenchEnv, RunContext, bench_env, poll, service_exists
from bench.model import BenchResult, ratio
from bench.procinfo import cpu_seconds
from bench.profiling import ProfileSummary
from bench.stats import median
from shared.bus.broker import amqp_message
from shared.bus.topology import ENRICHMENT, REGISTRATION
from shared.config import Settings
from shared.messages import Message, RegistrationRequested
from tests.support.processes import ROOT, ServiceProcess

TARGET = 0.8
REF_QUEUE = "bench.reference.registration"
FIRST_SALON = 10_000_000
PUBLISH_CHUNK = 500
# The registration queue's prefetch as deployed; the reference gets the same.
PREFETCH = Settings().batch_prefetch
USER = {"id": "123", "name": "Андрей Иванов", "phone": "79990009900", "email": "andrey@example.com"}


def registrations(first: int, count: int) -> list[Message]:
    """One single-salon install per salon id."""
    return [
        RegistrationRequested(salon_id=s, data={"salon_ids": [s], "user": USER}) for s in range(first, first + count)
    ]


async def batch_sizes(worker: ServiceProcess) -> tuple[float, float]:
    """Messages and batches applied so far, from the worker's own /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(worker.url + "/metrics")).text
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in found:
            if line.startswith(f"marketplace_batch_size_{kind}{{") and RegistrationRequested.ROUTING_KEY in line:
                found[kind] = float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


async def _persisted(env: BenchEnv, first: int, count: int) -> int:
    return int(
        str(
            await env.scalar(
                "SELECT count(*) FROM companies WHERE yclients_id >= :lo AND yclients_id < :hi",
                lo=first,
                hi=first + count,
            )
        )
    )


class Runner:
    """Runs one side's batches, handing out fresh salon ranges."""

    def __init__(self, env: BenchEnv, ctx: RunContext) -> None:
        self.env = env
        self.ctx = ctx
        self.next_salon = FIRST_SALON
        self.profiles: list[ProfileSummary] = []

    async def publish_ours(self, msgs: list[Message]) -> None:
        """To the exchange, as the gateway publishes (pipelined confirms, in chunks)."""
        for i in range(0, len(msgs), PUBLISH_CHUNK):
            await self.env.broker.publish_many(msgs[i : i + PUBLISH_CHUNK])

    async def publish_reference(self, msgs: list[Message]) -> None:
        """The same messages straight into the reference's queue."""
        for i in range(0, len(msgs), PUBLISH_CHUNK):
            await asyncio.gather(
                *(
                    self.env.broker.publish_raw(amqp_message(m), routing_key=REF_QUEUE, exchange="")
                    for m in msgs[i : i + PUBLISH_CHUNK]
                )
            )

    async def batch(
        self,
        publish: Callable[[list[Message]], Awaitable[None]],
        count: int,
        *,
        consumer: ServiceProcess,
        profile: bool = False,
    ) -> tuple[float, float, int, float | None]:
        """Publish `count` registrations and wait for every company.

        Returns seconds, publish seconds, the first salon id, and the consumer's CPU seconds meanwhile.
        """
        first = self.next_salon
        self.next_salon += count
        msgs = registrations(first, count)
        profiler = self.ctx.profiler() if profile else None
        recording = profiler.start(consumer.proc.pid, "registration") if profiler is not None else None
        cpu_before = cpu_seconds(consumer.proc.pid)
        started = time.perf_counter()
        await publish(msgs)
        published = time.perf_counter() - started
        # Bounded, but generous enough for a slow worker on a busy machine (10 per second).
        timeout = max(60.0, count / 10)

        async def all_there() -> bool:
            return await _persisted(self.env, first, count) >= count

        await poll(all_there, timeout=timeout, interval=0.1, what=f"{count} companies persisted")
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(consumer.proc.pid)
        cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
        if profiler is not None and recording is not None:
            summary = await asyncio.to_thread(
                profiler.finish,
                recording,
                label="ours: registration worker",
                root=str(ROOT),
                duration_s=elapsed,
                stop=True,
            )
            if summary is not None:
                self.profiles.append(summary)
        return elapsed, published, first, cpu


async def run(ctx: RunContext) -> BenchResult:
    """Run B3."""
    result = BenchResult("B3", "Pipeline: registration.requested → companies persisted")
    if not service_exists("registration"):
        result.skipped = "services/registration is not built yet"
        return result
    sizes = ctx.sizes
    count = sizes.pipeline_messages
    warm = max(20, count // 50)
    rates: dict[str, list[float]] = {"ours": [], "reference": []}
    publish_s: dict[str, list[float]] = {"ours": [], "reference": []}
    cpu_ms: dict[str, list[float]] = {"ours": [], "reference": []}
    enriched_during: list[int] = []
    mean_batch: list[float] = []
    company_calls = 0
    async with bench_env("B3", ctx) as env:
        sandbox = await asyncio.to_thread(env.start, "sandbox")
        # As deployed: the gateway's live-update queue receives `registration.completed`.
        await asyncio.to_thread(env.start, "gateway")
        channel = await env.broker.open_channel(publisher_confirms=False)
        await channel.declare_queue(REF_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.close()
        runner = Runner(env, ctx)
        for round_no in range(sizes.pipeline_rounds):
            order = ["reference", "ours"] if round_no % 2 == 0 else ["ours", "reference"]
            for side in order:
                if side == "ours":
                    worker = await asyncio.to_thread(env.start, "registration")
                    await runner.batch(runner.publish_ours, warm, consumer=worker)
                    applied_before, batches_before = await batch_sizes(worker)
                    elapsed, published, first, cpu = await runner.batch(
                        runner.publish_ours, count, consumer=worker, profile=round_no == 0 and ctx.profile
                    )
                    applied_after, batches_after = await batch_sizes(worker)
                    if batches_after > batches_before:
                        mean_batch.append((applied_after - applied_before) / (batches_after - batches_before))
                    enriched_during.append(
                        int(
                            str(
                                await env.scalar(
                                    "SELECT count(*) FROM companies WHERE enriched_at IS NOT NULL"
                                    " AND yclients_id >= :lo AND yclients_id < :hi",
                                    lo=first,
                                    hi=first + count,
                                )
                            )
                        )
                    )
                    # The enrichment follow-ups still queued would slow the next runs down: drop them.
                    await asyncio.to_thread(worker.kill)
                    await env.purge(REGISTRATION.name)
                    await env.purge(ENRICHMENT.name)
                    await env.sql("DELETE FROM rate_limits")
                    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as http:
                        calls = (await http.get("/__sandbox/calls", params={"path": "/api/v1/company"})).json()
                        company_calls += len(calls)
                        (await http.post("/__sandbox/reset")).raise_for_status()
                else:
                    loop = await asyncio.to_thread(
                        env.start_module,
                        "ref-loop",
                        ["bench.refloop", REF_QUEUE, "--prefetch", str(PREFETCH)],
                        http=False,
                        ready_line="consuming",
                    )
                    await runner.batch(runner.publish_reference, warm, consumer=loop)
                    elapsed, published, _, cpu = await runner.batch(runner.publish_reference, count, consumer=loop)
                    await asyncio.to_thread(loop.stop)
                rates[side].append(count / elapsed)
                if cpu is not None:
                    cpu_ms[side].append(cpu * 1000 / count)
                publish_s[side].append(published)
        ctx.findings += [line for p in runner.profiles for line in p.markdown()]

    result.method = [
        f"{count:,} `registration.requested` messages (one salon each, with the marketplace user) per side and "
        f"round, {sizes.pipeline_rounds} round(s), order reversed every round, each batch after a warm-up batch of "
        f"{warm}; published from the bench process with pipelined confirms ({PUBLISH_CHUNK} in flight); the clock "
        "runs from the first publish until a count of the batch's companies in PostgreSQL reaches the batch size "
        "(polled every 0.1 s).",
        f"Ours: the registration worker process as deployed (prefetch {PREFETCH}, SQLAlchemy pool 10+10, JSON logs "
        "at INFO) "
        "consuming its quorum queue: the registrations waiting together applied in one transaction (micro-batch): "
        "processed-message claims, company upserts (rows locked), `registration_started` audit rows, one "
        "`registration.completed` per salon written to the outbox in the same transaction and published with "
        "confirms after the commit, outbox rows deleted; then each message acked.",
        "Ours, meanwhile: the enrichment queue (subscribed to `registration.completed`) is consumed by the same "
        "worker: "
        "`GET /api/v1/company/{id}/` on the sandbox (up, with the platform's limits 5/s and 200/min) through the "
        "PostgreSQL rate limiter. They are part of the real pipeline, so they stay in; after each run the queue "
        "is purged and the limiter reset so the next run starts clean.",
        "Reference: `python -m bench.refloop`, a plain aio-pika consumer on its own quorum queue with the same "
        f"prefetch ({PREFETCH}) and an asyncpg pool of 20: one transaction inserting the processed-message id and "
        "upserting the company, then ack. Same tables, same database; no audit row, outbox, follow-ups or enrichment.",
        "The sandbox and the gateway run as deployed during both sides' runs (the gateway's live-update queue "
        "receives `registration.completed` / `registration.enriched`).",
        "Both sides run on the standard asyncio loop.",
    ]
    for side in ("ours", "reference"):
        shown = ", ".join(f"{r:,.0f}" for r in rates[side])
        result.figure(f"{side}: companies persisted per second", median(rates[side]), "msg/s", f"runs: {shown}")
        result.figure(f"{side}: publishing {count:,} took", median(publish_s[side]), "s", "pipelined confirms")
        result.figure(
            f"{side}: consumer CPU per message",
            median(cpu_ms[side]),
            "ms",
            "user+system time of the consuming process over the batch / messages (enrichment included for ours)",
        )
    if enriched_during:
        result.figure(
            "ours: companies already enriched when the batch was persisted",
            median([float(e) for e in enriched_during]),
            "companies",
            f"sandbox company calls over all our runs: {company_calls}",
        )
    if mean_batch:
        result.figure(
            "ours: registrations applied per transaction",
            median(mean_batch),
            "messages",
            "mean micro-batch size over the measured batch, from the worker's `marketplace_batch_size` histogram",
        )
    result.figure(
        "CPU per message, reference / ours",
        ratio(median(cpu_ms["reference"]), median(cpu_ms["ours"])),
        "×",
        "what the rate ratio tends to when the consumer's CPU is the bottleneck",
    )
    result.check("rate ours / reference", ratio(median(rates["ours"]), median(rates["reference"])), ">=", TARGET)
    return result
