"""The short form of `make chaos` — R1 (SIGKILL), R2 (broker cut via the proxy), R5 (YClients faults + replay).

One world (private database and vhost, the services as processes behind the proxies) serves the three
scenarios in turn; each must end with lost = 0 and duplicate effects = 0, and must really have injected its
fault (kills happened, webhooks were answered during the outage, permanent failures were parked and replayed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chaos.report import text_table
from chaos.run import ScenarioResult
from chaos.scenarios import Options
from chaos.suite import RETRY_DELAYS_MS, SHORT_SCENARIO_LIMIT_S, run_scenario
from chaos.world import World, WorldOptions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]
SHORT = Options(short=True)


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    """The services behind their proxies on a private database and vhost, for the three scenarios."""
    async with World(WorldOptions(label="chaos-short", retry_delays_ms=RETRY_DELAYS_MS)) as running:
        yield running


def explain(result: ScenarioResult) -> str:
    """The row and its notes, for a failing assertion."""
    return "\n".join([text_table([result.row]), *result.notes])


def assert_clean(result: ScenarioResult) -> None:
    """Load ran, every acknowledged operation applied once."""
    row = result.row
    assert row.acknowledged > 0, explain(result)
    assert row.lost == 0, explain(result)
    assert row.duplicates == 0, explain(result)
    assert result.ok, explain(result)


async def test_r1_sigkill_of_every_worker_type_and_a_gateway_loses_nothing(world: World) -> None:
    result = await run_scenario(world, "R1", SHORT, SHORT_SCENARIO_LIMIT_S)
    assert_clean(result)
    for role in world.roles():
        assert result.metrics.get(f"kills_{role}", 0) >= 1, explain(result)


async def test_r2_broker_cut_during_webhooks_is_answered_from_the_outbox(world: World) -> None:
    result = await run_scenario(world, "R2", SHORT, SHORT_SCENARIO_LIMIT_S)
    assert_clean(result)
    assert result.metrics["webhooks_answered_during_outage"] > 0, explain(result)
    assert result.metrics["outbox_at_recovery"] > 0, explain(result)


async def test_r5_yclients_faults_end_active_and_permanent_failures_replay(world: World) -> None:
    result = await run_scenario(world, "R5", SHORT, SHORT_SCENARIO_LIMIT_S)
    assert_clean(result)
    assert result.metrics["dead_before_replay"] >= 1, explain(result)
    assert result.metrics["replayed"] >= result.metrics["dead_before_replay"], explain(result)
    assert result.row.dead_lettered == result.metrics["dead_before_replay"]
