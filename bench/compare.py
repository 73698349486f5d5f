"""Head-to-head closed-loop runs of our endpoint and its reference, alternating so drift hits both alike."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bench.harness import BenchEnv, RunContext
from bench.load import LoadResult, LoadSpec, closed_load
from bench.model import BenchResult, ratio
from bench.procinfo import cpu_seconds
from bench.profiling import ProfileSummary
from bench.stats import median
from tests.support.processes import ROOT, ServiceProcess


@dataclass
class Side:
    """One contender: its load, its process, and the queue its publishes land in."""

    name: str
    spec: LoadSpec
    process: ServiceProcess
    queue: str
    runs: list[LoadResult] = field(default_factory=list)
    shortfall: int = 0
    cpu_per_request_ms: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float | None:
        """Median throughput over the measured runs."""
        return median([r.throughput for r in self.runs])

    @property
    def p50(self) -> float | None:
        """Median of the runs' p50 (ms)."""
        return median([r.p50_ms for r in self.runs if r.p50_ms is not None])

    @property
    def p99(self) -> float | None:
        """Median of the runs' p99 (ms)."""
        return median([r.p99_ms for r in self.runs if r.p99_ms is not None])

    @property
    def bad(self) -> int:
        """Errors and non-2xx/3xx answers over all measured runs."""
        return sum(r.bad for r in self.runs)


async def head_to_head(env: BenchEnv, sides: list[Side], ctx: RunContext, *, profile_side: str) -> list[ProfileSummary]:
    """`rounds` rounds; in each, every side gets a warm-up and a measured run (order reversed every round).

    Before each measured run the side's queue is purged; afterwards it must hold at least one message per
    answered request (each 2xx/3xx promised a confirmed publish) — a shortfall is reported.
    """
    sizes = ctx.sizes
    profiles: list[ProfileSummary] = []
    profiler = ctx.profiler()
    for round_no in range(sizes.rounds):
        order = sides if round_no % 2 == 0 else list(reversed(sides))
        for side in order:
            await env.purge(side.queue)
            await asyncio.to_thread(closed_load, side.spec, connections=sizes.connections, duration=sizes.warmup_s)
            await env.purge(side.queue)
            recording = None
            if profiler is not None and side.name == profile_side and round_no == 0:
                recording = profiler.start(side.process.proc.pid, f"{side.process.name}-{side.name}", sizes.duration_s)
            cpu_before = cpu_seconds(side.process.proc.pid)
            result = await asyncio.to_thread(
                closed_load, side.spec, connections=sizes.connections, duration=sizes.duration_s
            )
            cpu_after = cpu_seconds(side.process.proc.pid)
            if cpu_before is not None and cpu_after is not None and result.requests:
                side.cpu_per_request_ms.append((cpu_after - cpu_before) * 1000 / result.requests)
            if profiler is not None and recording is not None:
                summary = await asyncio.to_thread(
                    profiler.finish,
                    recording,
                    label=f"{side.name}: {side.spec.method} {side.spec.url.split('?')[0]}",
                    root=str(ROOT),
                    duration_s=sizes.duration_s,
                )
                if summary is not None:
                    profiles.append(summary)
            side.runs.append(result)
            answered = result.requests - result.bad
            side.shortfall += max(0, answered - await env.queue_depth(side.queue))
    return profiles


def report_sides(result: BenchResult, sides: list[Side], ctx: RunContext) -> None:
    """Throughput, p50, p99 per side, and the per-run throughputs."""
    for side in sides:
        tool = side.runs[0].tool if side.runs else "?"
        runs = ", ".join(f"{r.throughput:,.0f}" for r in side.runs)
        result.figure(f"{side.name}: throughput", side.throughput, "req/s", f"median of {len(side.runs)} runs ({runs})")
        result.figure(f"{side.name}: p50 latency", side.p50, "ms", f"{tool}, {ctx.sizes.connections} connections")
        result.figure(f"{side.name}: p99 latency", side.p99, "ms", f"{tool}, {ctx.sizes.connections} connections")
        result.figure(
            f"{side.name}: server CPU per request",
            median(side.cpu_per_request_ms),
            "ms",
            "user+system time of the server process / answered requests (robust to a busy machine)",
        )
        result.figure(f"{side.name}: errors and non-2xx/3xx", float(side.bad), "requests")
        total = sum(r.requests for r in side.runs)
        if side.bad > 0.01 * total:
            result.error = f"{side.name} answered {side.bad} of {total} requests with an error: see the logs"
        if side.shortfall:
            result.notes.append(
                f"{side.name}: {side.shortfall} answered requests without a message in `{side.queue}` afterwards"
            )


def throughput_ratio(ours: Side, reference: Side) -> float | None:
    """Our median throughput over the reference's (None when a side answered errors: its rate would mean nothing)."""
    if any(side.bad > 0.01 * sum(r.requests for r in side.runs) for side in (ours, reference)):
        return None
    return ratio(ours.throughput, reference.throughput)


def cpu_ratio(ours: Side, reference: Side) -> float | None:
    """The reference's CPU per request over ours: the throughput ratio a CPU-bound server would reach."""
    return ratio(median(reference.cpu_per_request_ms), median(ours.cpu_per_request_ms))
