"""`python -m services.registration` — the registration worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from services.registration.service import (
    enrich_company,
    register_batch,
    request_missing_enrichment,
)
from shared.bus.consumer import Delivery
from shared.bus.topology import ENRICHMENT, REGISTRATION
from shared.messages import EnrichmentRequested, Message, RegistrationCompleted, RegistrationRequested
from shared.worker import ConsumerSpec, WorkerContext, WorkerParts, worker_main

log = logging.getLogger(__name__)
NAME = "registration"
# Profiles still missing this long after registration are requested again (their retries ran out).
SWEEP_INTERVAL_S = 300.0
SWEEP_AGE_S = 900


async def setup(ctx: WorkerContext) -> WorkerParts:
    """Wire the service functions to the registration queue."""
    yclients = ctx.yclients()

    async def on_registrations(msgs: Sequence[Message]) -> None:
        cmds = [m for m in msgs if isinstance(m, RegistrationRequested)]
        assert len(cmds) == len(msgs)
        uow = ctx.uow()
        await register_batch(cmds, uow=uow)
        await ctx.publish_committed(uow)

    async def on_registration(msg: Message, _: Delivery) -> None:
        # One message alone (a lone arrival's fallback, a retry) is a batch of one: one code path.
        await on_registrations([msg])

    async def on_enrichment(msg: Message, _: Delivery) -> None:
        assert isinstance(msg, EnrichmentRequested | RegistrationCompleted)
        uow = ctx.uow()
        await enrich_company(msg, uow=uow, yclients=yclients)
        await ctx.publish_committed(uow)

    async def sweep(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=SWEEP_INTERVAL_S)
            except TimeoutError:
                try:
                    uow = ctx.uow()
                    if await request_missing_enrichment(uow, older_than_s=SWEEP_AGE_S):
                        await ctx.publish_committed(uow)
                except Exception as exc:
                    log.warning("enrichment sweep failed", extra={"error": repr(exc)})

    # Enrichment can't go faster than the shared YClients limit: a few in flight keep it busy.
    enrichment_prefetch = max(1, ctx.settings.YCLIENTS_RATE_PER_SECOND)
    return WorkerParts(
        handlers={RegistrationRequested: on_registration},
        batch_handlers={RegistrationRequested: on_registrations},
        extra_consumers=[
            ConsumerSpec(
                ENRICHMENT,
                {RegistrationCompleted: on_enrichment, EnrichmentRequested: on_enrichment},
                enrichment_prefetch,
            )
        ],
        background=[sweep],
    )


def main() -> None:
    """Run the registration worker until SIGTERM."""
    worker_main(NAME, REGISTRATION, lambda s: s.REGISTRATION_PORT, setup)


if __name__ == "__main__":
    main()
