"""B1 — webhook ingest: the real `POST /webhook/yclients` against a parse-and-publish reference."""

from __future__ import annotations

import asyncio
import json

from bench.compare import Side, cpu_ratio, head_to_head, report_sides, throughput_ratio
from bench.harness import APP_ID, RunContext, bench_env, service_exists
from bench.load import LoadSpec, wrk_available
from bench.model import BenchResult
from shared.bus.topology import ACTIVATION

TARGET = 0.85
SALON_ID = 962302


async def run(ctx: RunContext) -> BenchResult:
    """Run B1."""
    result = BenchResult("B1", "Webhook ingest: POST /webhook/yclients vs parse + one confirmed publish")
    if not service_exists("gateway"):
        result.skipped = "services/gateway is not built yet"
        return result
    sizes = ctx.sizes
    async with bench_env("B1", ctx) as env:
        gateway = await asyncio.to_thread(env.start, "gateway")
        reference = await asyncio.to_thread(env.start_module, "ref-ingest", ["bench.reference", "ingest"], http=True)
        body = json.dumps(
            {"salon_id": SALON_ID, "application_id": APP_ID, "event": "payment", "partner_token": env.partner_token}
        )
        headers = {"Content-Type": "application/json"}
        ours = Side(
            "ours", LoadSpec(gateway.url + "/webhook/yclients", "POST", body, headers), gateway, ACTIVATION.name
        )
        ref = Side(
            "reference",
            LoadSpec(reference.url + "/webhook/yclients", "POST", body, headers),
            reference,
            ACTIVATION.name,
        )
        profiles = await head_to_head(env, [ref, ours], ctx, profile_side="ours")
        ctx.findings += [line for p in profiles for line in p.markdown()]
    tool = "wrk" if wrk_available() else "the Python generator (wrk not installed)"
    result.method = [
        f"Load: {tool} from its own process on 127.0.0.1, closed loop, {sizes.connections} keep-alive connections; "
        f"{sizes.rounds} rounds × ({sizes.warmup_s:g} s warm-up + {sizes.duration_s:g} s measured) per side, "
        "order reversed every round; figures are medians over the rounds.",
        'Body: the YClients lifecycle webhook `{salon_id, application_id, event: "payment", partner_token}` '
        "(valid token and application id), the same bytes to both sides.",
        "Ours: the gateway process as deployed (uvicorn, FastAPI, its middleware, JSON logs at INFO): validation, "
        "constant-time token check, `yclients.webhook_received` envelope, confirmed publish (outbox only if the "
        "broker fails), 200.",
        "Reference: the same server stack with one route: `json.loads`, drop `partner_token`, one confirmed "
        "aio-pika publish to the same exchange and routing key, 200 — nothing else.",
        "Both publish into the `activation` quorum queue, with no consumer running (the activation worker is "
        "not started, so it takes no CPU); the queue is purged before every measured run, and afterwards must "
        "hold one message per answered request.",
    ]
    report_sides(result, [ours, ref], ctx)
    result.figure(
        "CPU per request, reference / ours",
        cpu_ratio(ours, ref),
        "×",
        "what the throughput ratio tends to when the server's CPU is the bottleneck",
    )
    result.check("throughput ours / reference", throughput_ratio(ours, ref), ">=", TARGET)
    return result
