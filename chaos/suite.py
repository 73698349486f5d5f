"""Running scenarios: each in a fresh world (`make chaos`) or all in one (the short form in `make test`)."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

from chaos.invariants import Evaluation
from chaos.model import Row
from chaos.report import text_table
from chaos.run import ScenarioResult
from chaos.scenarios import SCENARIOS, Options
from chaos.world import World, WorldOptions

log = logging.getLogger(__name__)

# 17 tries in ≈ 30 s: they outlast the longest outage a scenario injects, and at R5's fault rates (about one
# call in two fails, an activation retry makes two calls) an activation exhausts them with p ≈ 0.2%.
RETRY_DELAYS_MS = (300, 600, 1200, *([2000] * 13))
# Every scenario stops by itself: the world is torn down after this, whatever the scenario was doing.
FULL_SCENARIO_LIMIT_S = 600.0
SHORT_SCENARIO_LIMIT_S = 150.0


def run_label(started: datetime) -> str:
    """A label for log directories of one run."""
    return "chaos-" + started.strftime("%Y%m%d-%H%M%S")


def failed_result(key: str, exc: BaseException) -> ScenarioResult:
    """A row for a scenario that could not finish (the harness or the stack failed, or it ran out of time)."""
    what = "ran out of time" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    tail = traceback.format_exception(exc)[-3:]
    return ScenarioResult(
        key,
        SCENARIOS[key].__doc__ or key,
        Row(key, 0, 0, 0, 0, 0, 0, ok=False),
        Evaluation(),
        [f"BROKEN: the scenario did not finish — {what}", "".join(tail).strip().replace("\n", " ⏎ ")[:800]],
    )


async def run_scenario(world: World, key: str, options: Options, limit_s: float) -> ScenarioResult:
    """Run one scenario in `world`, bounded by `limit_s`; a scenario that fails to finish gets a FAIL row."""
    log.info("%s: running", key)
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit_s):
            result = await SCENARIOS[key](world, options)
    except Exception as exc:
        log.exception("%s did not finish", key)
        result = failed_result(key, exc)
    result.seconds = time.monotonic() - started
    log.info(
        "%s: %s in %.0f s\n%s\n%s",
        key,
        "ok" if result.ok else "FAIL",
        result.seconds,
        text_table([result.row]),
        "\n".join(f"  - {n}" for n in result.notes),
    )
    return result


async def run_suite(keys: Sequence[str], options: Options, *, shared_world: bool, label: str) -> list[ScenarioResult]:
    """Run the scenarios in order; one world for all when `shared_world`, else a fresh one each."""
    limit = SHORT_SCENARIO_LIMIT_S if options.short else FULL_SCENARIO_LIMIT_S
    results: list[ScenarioResult] = []
    if shared_world:
        async with World(WorldOptions(label=label, retry_delays_ms=RETRY_DELAYS_MS)) as world:
            for key in keys:
                results.append(await run_scenario(world, key, options, limit))
        return results
    for key in keys:
        log.info("%s: starting a fresh world", key)
        try:
            async with World(WorldOptions(label=f"{label}-{key}", retry_delays_ms=RETRY_DELAYS_MS)) as world:
                results.append(await run_scenario(world, key, options, limit))
        except Exception as exc:
            log.exception("%s: the world did not start", key)
            results.append(failed_result(key, exc))
    return results


def now() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)
