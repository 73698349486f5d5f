"""The scenarios R1–R6 of issue 5, each in a full form (`make chaos`) and a short one (`make test`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from chaos.faults import (
    Outage,
    ProxyOutage,
    RealBrokerStop,
    RealDbRestart,
    add_sandbox_fault,
    clear_sandbox_faults,
    hold_outage,
)
from chaos.load import LIFECYCLE_EVENTS, Mix, Plan, make_plans
from chaos.observe import DEAD_QUEUES, call_stats
from chaos.run import Run, ScenarioResult, Timing
from chaos.world import World
from shared.bus.replay import DeadQueueMissing, move_dead, selector
from shared.db.models import OutboxMessage

log = logging.getLogger(__name__)

# Exit within this after SIGTERM (issue 5, R6).
MAX_EXIT_S = 10.0
# Log lines a worker writes when a message it already applied comes again (a redelivery after a crash).
REDELIVERY_MARKERS = ("registration already applied", "command already recorded", "already applied")


@dataclass(frozen=True)
class Options:
    """How a suite of scenarios runs."""

    short: bool = False
    real_broker_stop: bool = False
    real_db_restart: bool = False
    seed: int = 5

    @property
    def timing(self) -> Timing:
        """Deadlines for the size of the run."""
        if self.short:
            return Timing(op_timeout_s=45, activation_timeout_s=40, drain_timeout_s=45)
        return Timing()


def _size(options: Options, short: int, full: int) -> int:
    return short if options.short else full


async def _until(done: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `done` is set first; True when `done` was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=seconds)
        return True
    return False


async def _finish(
    run: Run,
    key: str,
    title: str,
    notes: list[str],
    *,
    broken: list[str] | None = None,
    dead_before: int | None = None,
) -> ScenarioResult:
    """Drain, evaluate, and add what the scenario itself found broken to the invariants' findings."""
    drained = await run.drain()
    drained.evaluation.anomalies.extend(broken or [])
    row = drained.evaluation.row(key, dead_lettered=dead_before)
    return ScenarioResult(
        key, title, row, drained.evaluation, notes + run.notes(drained), time.monotonic() - run.started
    )


# ---- R1 ---------------------------------------------------------------------------------------------------


async def r1_sigkill(world: World, options: Options) -> ScenarioResult:
    """SIGKILL each worker type repeatedly during the load, and one of the two gateways."""
    salons = world.new_salons(_size(options, 10, 60))
    rng = random.Random(options.seed)
    plans = make_plans(salons, Mix(), rng)
    roles = [r for r in ("registration", "activation", "whatsapp", "gateway") if r in world.roles()]
    rounds = _size(options, 1, 3)
    timeline: list[str] = []

    async with Run(world, timing=options.timing, seed=options.seed) as run:
        done = asyncio.Event()

        restarting: dict[str, asyncio.Task[None]] = {}
        ready_at: dict[str, float] = {}
        # A restarted instance works this long before its role is hit again: killing it faster than it can
        # drain its prefetch only proves that the broker's delivery limit parks messages of a crash loop.
        min_uptime_s = 3.0 if options.short else 8.0

        async def bring_back(role: str, index: int, killed_at: float) -> None:
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            await world.restart(role, index)
            ready_at[role] = time.monotonic()
            back = ready_at[role] - run.started
            timeline.append(f"{role}#{index + 1} at {killed_at:.0f} s (ready again at {back:.0f} s)")

        async def killer() -> None:
            await asyncio.sleep(1.0)
            turn = 0
            # Every role `rounds` times at least; the full form goes on until the load ends. A role whose
            # last victim is still starting (or only just started) is skipped, so one gateway always answers.
            while turn < rounds * len(roles) or not (done.is_set() or options.short):
                role = roles[turn % len(roles)]
                pending = restarting.get(role)
                if (pending is not None and not pending.done()) or (
                    time.monotonic() - ready_at.get(role, 0.0) < min_uptime_s
                ):
                    await asyncio.sleep(0.2)
                    continue
                turn += 1
                index = rng.randrange(len(world.procs[role]))
                await world.kill(role, index)
                restarting[role] = asyncio.create_task(bring_back(role, index, time.monotonic() - run.started))
                await _until(done, rng.uniform(0.5, 1.5) if options.short else rng.uniform(1.0, 2.5))
            await asyncio.gather(*restarting.values())

        chaos = asyncio.create_task(killer())
        await run.load(plans, spacing_s=_size(options, 12, 45) / len(plans))
        done.set()
        await chaos
        await world.restart_all()
        retried = [op for op in run.history.ops if op.attempts > 1]
        per_role = Counter(t.split("#", 1)[0] for t in timeline)
        notes = [
            f"{len(timeline)} SIGKILLs ({', '.join(f'{r} ×{per_role[r]}' for r in roles)}), each instance restarted "
            f"at once on its port and left up ≥ {min_uptime_s:.0f} s before its role was hit again; first ones: "
            + ", ".join(timeline[:8])
            + ".",
            f"instances: {', '.join(f'{r} ×{len(world.procs[r])}' for r in roles)}; "
            f"{len(retried)} operation(s) needed more than one attempt "
            f"(most: {max((op.attempts for op in retried), default=1)}), retried on the other gateway / phone.",
        ]
        result = await _finish(run, "R1", "SIGKILL workers and a gateway under load", notes)
        result.metrics = {"kills": len(timeline), "retried_ops": len(retried)}
        result.metrics.update({f"kills_{role}": sum(t.startswith(role + "#") for t in timeline) for role in roles})
        return result


# ---- R2 ---------------------------------------------------------------------------------------------------


async def _outbox_rows(world: World) -> int:
    assert world.sessionmaker is not None
    async with world.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(OutboxMessage))).scalar_one())


async def r2_broker_outage(world: World, options: Options) -> ScenarioResult:
    """RabbitMQ gone for 20 s during webhook ingest; the gateway answers from its outbox; the relay drains it."""
    assert world.broker_proxy is not None
    outage_s = _size(options, 6, 20)
    rng = random.Random(options.seed + 2)
    warm = world.new_salons(_size(options, 5, 20))
    fresh = world.new_salons(_size(options, 3, 10))
    warm_plans = [
        Plan(s, manual_activate=False, webhook=LIFECYCLE_EVENTS[i % 3], deliveries=1 + (rng.random() < 0.3))
        for i, s in enumerate(warm)
    ]
    fresh_plans = make_plans(fresh, Mix(webhook=0.0), rng)
    outage: Outage = RealBrokerStop() if options.real_broker_stop else ProxyOutage(world.broker_proxy, "RabbitMQ")

    async with Run(world, timing=options.timing, seed=options.seed + 2) as run:
        gate = asyncio.Event()
        run.ctx.webhook_gate = gate
        run.ctx.webhook_spread_s = outage_s * 0.8
        warm_load = asyncio.create_task(run.load(warm_plans, spacing_s=0.3))
        active = await run.wait_active(warm, options.timing.activation_timeout_s)
        began = time.monotonic()
        await outage.begin()
        try:
            gate.set()
            fresh_load = asyncio.create_task(run.load(fresh_plans, spacing_s=outage_s * 0.6 / max(1, len(fresh))))
            await asyncio.sleep(outage_s)
            held = await _outbox_rows(world)
        finally:
            await outage.end()
        ended = time.monotonic()
        await asyncio.gather(warm_load, fresh_load)
        during = [
            op
            for op in run.history.ops
            if op.kind == "webhook" and op.acked_at is not None and began <= op.acked_at <= ended
        ]
        hooks = [op for op in run.history.ops if op.kind == "webhook"]
        notes = [
            f"{outage.description} for {outage_s} s, after {active}/{len(warm)} warm salons were active; "
            f"{len(during)} of {len(hooks)} lifecycle webhooks were answered during the outage "
            f"(slowest answer {max((op.acked_at or 0) - op.started_at for op in hooks) if hooks else 0:.2f} s); "
            f"the outbox held {held} message(s) when the broker came back; "
            f"{len(fresh)} new installs started during the outage."
        ]
        result = await _finish(run, "R2", "RabbitMQ gone during webhook ingest", notes)
        result.metrics = {"webhooks_answered_during_outage": len(during), "outbox_at_recovery": held}
        return result


# ---- R3 ---------------------------------------------------------------------------------------------------


async def r3_database_restart(world: World, options: Options) -> ScenarioResult:
    """PostgreSQL restarted (its connections cut, new ones refused) while the workers process the load."""
    assert world.db_proxy is not None
    salons = world.new_salons(_size(options, 8, 30))
    rng = random.Random(options.seed + 3)
    plans = make_plans(salons, Mix(), rng)
    outage_s = _size(options, 4, 8)
    outage: Outage = RealDbRestart() if options.real_db_restart else ProxyOutage(world.db_proxy, "PostgreSQL")

    async with Run(world, timing=options.timing, seed=options.seed + 3) as run:
        load = asyncio.create_task(run.load(plans, spacing_s=0.6))
        await asyncio.sleep(len(plans) * 0.6 / 3)
        await hold_outage(outage, outage_s)
        resets = 0
        if not options.real_db_restart:
            await asyncio.sleep(len(plans) * 0.6 / 3)
            resets = world.db_proxy.reset()
        await load
        notes = [
            f"{outage.description} for {outage_s} s a third into the load"
            + (f"; later every open database connection was reset (RST): {resets}." if resets else ".")
        ]
        return await _finish(run, "R3", "PostgreSQL restarted during processing", notes)


# ---- R4 ---------------------------------------------------------------------------------------------------


async def r4_bad_network(world: World, options: Options) -> ScenarioResult:
    """The broker connection through the proxy: latency and jitter, with cuts, resets and short outages."""
    proxy = world.broker_proxy
    assert proxy is not None
    salons = world.new_salons(_size(options, 8, 40))
    rng = random.Random(options.seed + 4)
    plans = make_plans(salons, Mix(), rng)
    actions: Counter[str] = Counter()

    async with Run(world, timing=options.timing, seed=options.seed + 4) as run:
        done = asyncio.Event()
        proxy.set_latency(0.03, 0.07)

        async def disturb() -> None:
            turn = 0
            while not await _until(done, rng.uniform(8.0, 14.0)):
                action = ("cut", "reset", "outage")[turn % 3]
                turn += 1
                actions[action] += 1
                if action == "cut":
                    proxy.cut()
                elif action == "reset":
                    proxy.reset()
                else:
                    proxy.down()
                    await asyncio.sleep(rng.uniform(1.0, 2.0))
                    proxy.up()

        chaos = asyncio.create_task(disturb())
        try:
            await run.load(plans, spacing_s=1.0)
        finally:
            done.set()
            await chaos
            proxy.set_latency(0)
            proxy.up()
        stats = proxy.stats()
        notes = [
            "broker connections through the proxy with 30–100 ms latency each way; every 8–14 s one of: "
            f"all connections closed (×{actions['cut']}), reset with RST (×{actions['reset']}), "
            f"refused for 1–2 s (×{actions['outage']}); the proxy accepted {stats.accepted} connections in all. "
            "(aio-pika's robust connection waits 5 s before each reconnect, so every disruption costs a service "
            "its broker for at least that long.)"
        ]
        return await _finish(run, "R4", "broker connection: latency, cuts, resets", notes)


# ---- R5 ---------------------------------------------------------------------------------------------------


async def r5_yclients_faults(world: World, options: Options) -> ScenarioResult:
    """YClients failing: 30% 5xx, 10% timeouts, 429 bursts → all active; 401s end in `.dead`, replay → active."""
    assert world.broker is not None
    salons = world.new_salons(_size(options, 6, 30))
    rng = random.Random(options.seed + 5)
    plans = make_plans(salons, Mix(install_only=0.0, webhook=0.3, events=("freeze", "payment")), rng)
    permanent = _size(options, 1, 3)
    bursts = 0

    async with Run(world, timing=options.timing, seed=options.seed + 5) as run:
        done = asyncio.Event()
        # Applied in this order: the first callbacks are refused for good (401), then a call risks a lost 201,
        # a timeout, a 5xx; 429 bursts are added as the load runs.
        await add_sandbox_fault(world, endpoint="callback", mode="401", count=permanent)
        await add_sandbox_fault(world, endpoint="callback", mode="lost_response", probability=0.05, delay_s=4)
        await add_sandbox_fault(world, endpoint="*", mode="timeout", probability=0.1, delay_s=4)
        await add_sandbox_fault(world, endpoint="*", mode="5xx", probability=0.3)

        async def burst_429() -> None:
            nonlocal bursts
            while not await _until(done, rng.uniform(8.0, 15.0)):
                await add_sandbox_fault(world, endpoint="*", mode="429", count=rng.randint(3, 5))
                bursts += 1

        chaos = asyncio.create_task(burst_429())
        try:
            await run.load(plans, spacing_s=0.6)
            done.set()
            await chaos
            before = await run.drain()
        finally:
            done.set()
            await clear_sandbox_faults(world)
        stats = await call_stats(world, salons)
        dead_before = len(before.evaluation.dead)
        moved = 0
        for queue in DEAD_QUEUES:
            with contextlib.suppress(DeadQueueMissing):
                report = await move_dead(world.broker, queue, select=selector(salons=salons), dry_run=False)
                moved += len(report.moved)
        parked = "; ".join(f"{d.type} salon {d.salon_id}: {d.reason[:120]}" for d in before.evaluation.dead)
        exhausted = sum(1 for d in before.evaluation.dead if d.reason.startswith("exhausted"))
        notes = [
            "sandbox faults on every YClients endpoint: 5xx p=0.3, timeouts p=0.1 (4 s, the client gives up at 2 s), "
            f"lost 201 answers on the callback p=0.05, {bursts} bursts of 3–5 × 429 on top of the 5 rps limit; "
            f"{permanent} callback(s) answered 401 (permanent). Until the replay {stats.describe()}.",
            f"before the replay: {dead_before} message(s) in `.dead`, {dead_before - exhausted} permanent and "
            f"{exhausted} with their {len(world.options.retry_delays_ms) + 1} attempts exhausted by transient faults "
            f"({parked or 'none'}), "
            f"{before.evaluation.pending} acknowledged operation(s) not applied outside them; "
            f"faults cleared, `shared.bus.replay.move_dead` moved {moved} message(s) back.",
        ]
        broken = []
        if dead_before < permanent:
            broken.append(
                f"expected at least {permanent} dead-lettered activation(s) before the replay, found {dead_before}"
            )
        result = await _finish(
            run, "R5", "YClients faults, permanent failures replayed", notes, broken=broken, dead_before=dead_before
        )
        result.metrics = {
            "exhausted_before_replay": exhausted,
            "dead_before_replay": dead_before,
            "replayed": moved,
            "bursts_429": bursts,
            "sandbox_rate_limited": stats.rate_limited,
        }
        if result.evaluation.dead:
            result.evaluation.anomalies.append(
                f"{len(result.evaluation.dead)} message(s) still in `.dead` after the replay"
            )
            result.row = result.evaluation.row("R5", dead_lettered=dead_before)
        return result


# ---- R6 ---------------------------------------------------------------------------------------------------


def _redeliveries(world: World, since_files: set[str]) -> int:
    count = 0
    for path in sorted(world.log_dir.glob("*.log")):
        if path.name in since_files:
            continue
        text = path.read_text(errors="replace")
        count += sum(text.count(marker) for marker in REDELIVERY_MARKERS[:2])
    return count


async def r6_sigterm(world: World, options: Options) -> ScenarioResult:
    """SIGTERM to every service under load: in-flight work finishes, nothing applied twice, each exits in < 10 s."""
    salons = world.new_salons(_size(options, 8, 30))
    rng = random.Random(options.seed + 6)
    plans = make_plans(salons, Mix(), rng)

    async with Run(world, timing=options.timing, seed=options.seed + 6) as run:
        load = asyncio.create_task(run.load(plans, spacing_s=0.6))
        await asyncio.sleep(len(plans) * 0.6 * 0.4)
        before = {p.name for p in world.log_dir.glob("*.log")}
        exits = await world.terminate_all()
        await world.restart_all()
        await load
        slow = [e for e in exits if e.seconds >= MAX_EXIT_S or e.code != 0]
        notes = [
            "SIGTERM to every service at once, 40% into the load; exit times: "
            + ", ".join(f"{e.name}:{e.port} {e.seconds:.1f} s (code {e.code})" for e in exits)
            + f"; slowest {max(e.seconds for e in exits):.1f} s. All restarted at once afterwards.",
            f"redeliveries of already-applied messages logged after the restart: {_redeliveries(world, before)}.",
        ]
        broken = [
            f"{e.name}:{e.port} did not exit cleanly within {MAX_EXIT_S:.0f} s ({e.seconds:.1f} s, code {e.code})"
            for e in slow
        ]
        result = await _finish(run, "R6", "SIGTERM every service under load", notes, broken=broken)
        result.metrics = {"slowest_exit_s": max(e.seconds for e in exits), "processes": len(exits)}
        return result


Scenario = Callable[[World, Options], Awaitable[ScenarioResult]]

SCENARIOS: dict[str, Scenario] = {
    "R1": r1_sigkill,
    "R2": r2_broker_outage,
    "R3": r3_database_restart,
    "R4": r4_bad_network,
    "R5": r5_yclients_faults,
    "R6": r6_sigterm,
}
