"""`python -m bench [B1 B2 ...] [--quick] [--profile] [--out PATH]` — what `make bench` runs.

With no benchmark named, all run. The full run writes docs/bench.md; a `--quick` run or a subset writes
under test-output/bench/ unless `--out` says otherwise (so a partial run never replaces the full report).
Exit status: 0 every target met, 1 a target missed, 2 a benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench import b1_webhook, b2_redirect, b3_pipeline, b4_activation, b5_resources
from bench.harness import RunContext
from bench.machine import describe, load_average
from bench.model import BenchResult
from bench.report import render, summary_rows, table
from bench.sizes import FULL, QUICK
from tests.support.infra import PG_ADMIN
from tests.support.processes import OUTPUT, ROOT

BENCHES: dict[str, Callable[[RunContext], Awaitable[BenchResult]]] = {
    "B1": b1_webhook.run,
    "B2": b2_redirect.run,
    "B3": b3_pipeline.run,
    "B4": b4_activation.run,
    "B5": b5_resources.run,
}
DOC = ROOT / "docs" / "bench.md"


async def _postgres_version() -> str:
    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"unreachable ({type(exc).__name__})"
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _run_one(key: str, ctx: RunContext) -> BenchResult:
    started = time.monotonic()
    print(f"== {key} ...", flush=True)
    try:
        result = await BENCHES[key](ctx)
    except Exception as exc:
        result = BenchResult(key, "failed to run", error=f"{type(exc).__name__}: {exc}")
        (ctx.out_dir / f"{key}-error.txt").write_text(traceback.format_exc())
        print(traceback.format_exc(), file=sys.stderr, flush=True)
    result.seconds = time.monotonic() - started
    for row in summary_rows([result]):
        print("   " + " | ".join(row), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, print the table, write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", metavar="B1..B5", help="which benchmarks (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the harness")
    parser.add_argument("--profile", action="store_true", help="sample our processes with py-spy while loaded")
    parser.add_argument("--out", type=Path, help="where to write the report")
    args = parser.parse_args(argv)
    chosen = [b.upper() for b in args.benches] or list(BENCHES)
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    sizes = QUICK if args.quick else FULL
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = OUTPUT / "bench" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    full = not args.quick and chosen == list(BENCHES)
    target = args.out or (DOC if full else out_dir / "bench.md")
    command = "python -m bench" + (
        "" if argv is None and len(sys.argv) <= 1 else " " + shlex.join(argv or sys.argv[1:])
    )
    ctx = RunContext(sizes=sizes, out_dir=out_dir, profile=args.profile)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = describe(ROOT, asyncio.run(_postgres_version()))
    machine["sizes"] = sizes.label
    results = [asyncio.run(_run_one(key, ctx)) for key in chosen]
    machine["load average at end"] = load_average()
    document = render(results, command=command, machine=machine, started=started, findings=ctx.findings)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document)
    print()
    print("\n".join(table(["bench", "check", "measured", "target", "result"], summary_rows(results))))
    print(f"\nreport: {target}\nlogs and profiles: {out_dir}")
    if any(r.error is not None for r in results):
        return 2
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
