"""placeholder"""

from __future__ import annotations

from bench.harness import RunContext
from bench.model import BenchResult


async def run(ctx: RunContext) -> BenchResult:
    """Not written yet."""
    return BenchResult("b4_activation", "todo", skipped="not written yet")
