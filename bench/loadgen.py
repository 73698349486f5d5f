"""`python -m bench.loadgen`: an HTTP load generator process (closed loop like wrk, or open loop at a fixed rate).

Open loop measures each request from the moment it was *scheduled*, so a slow server cannot hide its
queueing delay by slowing the generator down (no coordinated omission). Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import uvloop

from bench.rawhttp import Connection, Request
from bench.stats import Summary

RESULT_PREFIX = "BENCH_RESULT "


def _requests(
    method: str, url: str, targets: list[str], body: bytes, headers: dict[str, str]
) -> tuple[str, int, list[Request]]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    paths = targets or [parts.path + (f"?{parts.query}" if parts.query else "")]
    built = [Request.build(method, p, host=f"{host}:{port}", body=body, headers=headers) for p in paths]
    return host, port, built


async def closed_loop(
    host: str, port: int, requests: list[Request], connections: int, duration: float
) -> dict[str, object]:
    """`connections` clients, each sending its next request as soon as the previous one is answered."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    cycle = itertools.cycle(requests)
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal errors
        conn = Connection(host, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status, _ = await conn.send(next(cycle))
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    await asyncio.sleep(0.01)
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            await conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return _result(latencies, statuses, errors, time.perf_counter() - began, offered=None)


async def open_loop(
    host: str, port: int, requests: list[Request], connections: int, duration: float, rate: float
) -> dict[str, object]:
    """Requests scheduled every 1/rate s on a pool of `connections`; latency counted from the scheduled time."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(host, port))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    cycle = itertools.cycle(requests)

    async def one(scheduled: float, request: Request) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status, _ = await conn.send(request)
            latencies.append(time.perf_counter() - scheduled)
            statuses[status] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        finally:
            pool.put_nowait(conn)

    began = time.perf_counter()
    total = int(duration * rate)
    tasks: list[asyncio.Task[None]] = []
    for i in range(total):
        scheduled = began + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, next(cycle))))
    # Bounded: whatever has not finished a while after the schedule ended counts as an error.
    _, pending = await asyncio.wait(tasks, timeout=max(10.0, duration))
    for task in pending:
        task.cancel()
    errors += len(pending)
    elapsed = time.perf_counter() - began
    while not pool.empty():
        await pool.get_nowait().close()
    return _result(latencies, statuses, errors, elapsed, offered=rate)


def _result(
    latencies: list[float], statuses: Counter[int], errors: int, elapsed: float, *, offered: float | None
) -> dict[str, object]:
    s = Summary.of(latencies)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "offered_rate": offered,
        "p50_ms": None if s.p50 is None else s.p50 * 1000,
        "p99_ms": None if s.p99 is None else s.p99 * 1000,
        "max_ms": None if s.max is None else s.max * 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> None:
    """Run one load and print its result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--targets-file", help="one path?query per line, used in turn")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, help="open loop at this many requests per second")
    args = parser.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)
    targets: list[str] = []
    if args.targets_file:
        with open(args.targets_file, encoding="utf-8") as fh:
            targets = [line.strip() for line in fh if line.strip()]
    host, port, requests = _requests(args.method, args.url, targets, args.body.encode(), headers)
    if args.rate:
        work = open_loop(host, port, requests, args.connections, args.duration, args.rate)
    else:
        work = closed_loop(host, port, requests, args.connections, args.duration)
    result = uvloop.run(work)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
