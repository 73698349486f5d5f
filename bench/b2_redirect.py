"""B2 — install redirect with `user_data`: vs a parse-verify-publish reference, and vs the seed's inline handler."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import httpx

from bench.compare import Side, cpu_ratio, head_to_head, report_sides, throughput_ratio
from bench.harness import RunContext, bench_env, service_exists
from bench.load import LoadResult, LoadSpec, run_generator, wrk_available
from bench.model import BenchResult, ratio
from shared.bus.topology import REGISTRATION
from shared.tokens import encode_user_data, sign_user_data

TARGET_THROUGHPUT = 0.8
TARGET_P99 = 5.0
SANDBOX_LATENCY_S = 0.15
SALON_ID = 962302
# Enough that requests never queue in the generator (each admin has a browser of their own).
OPEN_CONNECTIONS = 128
# Distinct salons for the seed comparison, so the seed's upserts don't queue on one row lock.
SEED_SALONS = range(3_000_001, 3_002_001)
USER = {"id": 123, "name": "Андрей Иванов", "email": "andrey@example.com", "phone": "79990009900"}


def redirect_query(salon_id: int, partner_token: str) -> str:
    """The query YClients sends: salon id, URL-safe base64 user_data and its HMAC over the decoded bytes."""
    raw = json.dumps(USER, ensure_ascii=False, separators=(",", ":")).encode()
    return urlencode(
        {
            "salon_id": salon_id,
            "user_data": encode_user_data(raw, urlsafe=True),
            "user_data_sign": sign_user_data(raw, partner_token),
        }
    )


async def run(ctx: RunContext) -> BenchResult:
    """Run B2."""
    result = BenchResult("B2", "Install redirect: GET /auth/yclients/redirect with user_data")
    if not service_exists("gateway"):
        result.skipped = "services/gateway is not built yet"
        return result
    sizes = ctx.sizes
    path = "/auth/yclients/redirect"
    async with bench_env("B2", ctx) as env:
        sandbox = await asyncio.to_thread(env.start, "sandbox")
        gateway = await asyncio.to_thread(env.start, "gateway")
        reference = await asyncio.to_thread(
            env.start_module, "ref-redirect", ["bench.reference", "redirect"], http=True
        )
        seed = await asyncio.to_thread(env.start_module, "ref-seed", ["bench.reference", "seed"], http=True)
        query = redirect_query(SALON_ID, env.partner_token)
        ours = Side("ours", LoadSpec(f"{gateway.url}{path}?{query}"), gateway, REGISTRATION.name)
        ref = Side("reference", LoadSpec(f"{reference.url}{path}?{query}"), reference, REGISTRATION.name)
        profiles = await head_to_head(env, [ref, ours], ctx, profile_side="ours")
        ctx.findings += [line for p in profiles for line in p.markdown()]

        # The seed comparison: the same open-loop load on both handlers; YClients answers in 150 ms.
        async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as http:
            (await http.put("/__sandbox/ratelimit", json={"per_second": None, "per_minute": None})).raise_for_status()
            fault = {"endpoint": "company", "mode": "slow", "delay_s": SANDBOX_LATENCY_S}
            (await http.post("/__sandbox/faults", json=fault)).raise_for_status()
            targets = tuple(f"{path}?{redirect_query(s, env.partner_token)}" for s in SEED_SALONS)
            open_runs: dict[str, LoadResult] = {}
            for name, process in (("seed-style", seed), ("ours", gateway)):
                spec = LoadSpec(process.url + path, targets=targets)
                # Warm-up at the same rate (connections, caches), then the measured run.
                await asyncio.to_thread(
                    run_generator, spec, connections=OPEN_CONNECTIONS, duration=sizes.warmup_s, rate=sizes.seed_rate
                )
                await env.purge(REGISTRATION.name)
                open_runs[name] = await asyncio.to_thread(
                    run_generator,
                    spec,
                    connections=OPEN_CONNECTIONS,
                    duration=sizes.seed_duration_s,
                    rate=sizes.seed_rate,
                )
            company_calls = len((await http.get("/__sandbox/calls", params={"path": "/api/v1/company"})).json())
        seeded = await env.scalar("SELECT count(*) FROM companies")

    tool = "wrk" if wrk_available() else "the Python generator (wrk not installed)"
    result.method = [
        f"Throughput: {tool} from its own process on 127.0.0.1, closed loop, {sizes.connections} keep-alive "
        f"connections; {sizes.rounds} rounds × ({sizes.warmup_s:g} s warm-up + {sizes.duration_s:g} s measured) per "
        "side, order reversed every round; medians over the rounds.",
        "Request: `?salon_id=…&user_data=<URL-safe base64 of the Cyrillic user JSON>&user_data_sign=<HMAC-SHA256>` "
        "as YClients sends it; every answer must be a 302.",
        "Ours: the gateway as deployed: salon id parsing (all three forms), base64 in both alphabets, HMAC over "
        "the decoded bytes, `registration.requested` envelope, confirmed publish (outbox fallback), onboarding "
        "JWT, 302 with no-store headers.",
        "Reference: the same server stack, one route: parse the query, decode, verify the HMAC, one confirmed "
        "publish to the same exchange and key, sign the onboarding JWT, 302 — nothing else.",
        f"Seed-style: the same parsing and HMAC, then `GET /api/v1/company/{{id}}/` on the sandbox (answering in "
        f"{SANDBOX_LATENCY_S * 1000:.0f} ms by a `slow` fault; its rate limit lifted so the seed gets no 429s) and "
        "the company upsert + `marketplace_events` row written inline (asyncpg, one transaction), then JWT and 302.",
        f"Latency comparison: open loop at {sizes.seed_rate:g} requests/s for {sizes.seed_duration_s:g} s against "
        f"each handler (our Python generator, {OPEN_CONNECTIONS} connections, after a warm-up at the same rate, "
        f"{len(SEED_SALONS)} distinct salons in turn), latency counted from the scheduled send time.",
        "No registration worker runs: published messages wait in the `registration` queue, purged before each run.",
    ]
    report_sides(result, [ours, ref], ctx)
    for name, run_result in open_runs.items():
        note = f"open loop {sizes.seed_rate:g}/s, {run_result.requests} answered, {run_result.bad} errors/non-3xx"
        result.figure(f"{name}: p50 latency at {sizes.seed_rate:g}/s", run_result.p50_ms, "ms", note)
        result.figure(f"{name}: p99 latency at {sizes.seed_rate:g}/s", run_result.p99_ms, "ms", note)
    result.figure("seed-style: calls to the sandbox company endpoint", float(company_calls), "calls")
    result.figure("seed-style: companies written inline", float(int(str(seeded))), "rows")
    result.figure(
        "CPU per request, reference / ours",
        cpu_ratio(ours, ref),
        "×",
        "what the throughput ratio tends to when the server's CPU is the bottleneck",
    )
    result.check("throughput ours / reference", throughput_ratio(ours, ref), ">=", TARGET_THROUGHPUT)
    seed_run, ours_run = open_runs["seed-style"], open_runs["ours"]
    usable = seed_run.bad == 0 and ours_run.bad == 0
    result.check(
        "p99 seed-style / ours (same offered load)",
        ratio(seed_run.p99_ms, ours_run.p99_ms) if usable else None,
        ">=",
        TARGET_P99,
        note="" if usable else "a side answered errors: see the logs",
    )
    return result
