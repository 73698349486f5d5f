"""`python -m services.activation` — the activation worker."""

from __future__ import annotations

import logging

from services.activation.lifecycle import apply_lifecycle_webhook
from services.activation.service import activate_salon, give_up, note_logged_out
from shared.bus.consumer import Delivery
from shared.bus.errors import PublishError
from shared.bus.topology import ACTIVATION
from shared.db.uow import UnitOfWork
from shared.messages import (
    Message,
    RequestActivation,
    WhatsAppConnected,
    WhatsAppLoggedOut,
    YClientsWebhookReceived,
)
from shared.worker import WorkerContext, WorkerParts, worker_main

log = logging.getLogger(__name__)
NAME = "activation"


async def setup(ctx: WorkerContext) -> WorkerParts:
    """Wire the service functions to the activation queue."""
    yclients = ctx.yclients()

    async def publish_then_reraise(uow: UnitOfWork) -> None:
        # What was committed before a failure (e.g. `activation_failed`) must still reach the page;
        # if the broker is down too, the outbox relay publishes it later.
        try:
            await ctx.publish_committed(uow)
        except PublishError as exc:
            log.warning("follow-ups left to the outbox relay", extra={"error": str(exc)})

    async def on_activation(msg: Message, delivery: Delivery) -> None:
        assert isinstance(msg, WhatsAppConnected | RequestActivation)
        uow = ctx.uow()
        try:
            await activate_salon(msg, uow=uow, yclients=yclients, settings=ctx.settings, attempt=delivery.attempt)
        except Exception:
            await publish_then_reraise(uow)
            raise
        await ctx.publish_committed(uow)

    async def on_logged_out(msg: Message, _: Delivery) -> None:
        assert isinstance(msg, WhatsAppLoggedOut)
        await note_logged_out(msg, uow=ctx.uow())

    async def on_webhook(msg: Message, _: Delivery) -> None:
        assert isinstance(msg, YClientsWebhookReceived)
        uow = ctx.uow()
        try:
            await apply_lifecycle_webhook(msg, uow=uow, yclients=yclients)
        except Exception:
            await publish_then_reraise(uow)
            raise
        await ctx.publish_committed(uow)

    async def on_give_up(msg: Message, reason: str) -> None:
        uow = ctx.uow()
        if await give_up(msg, reason, uow=uow):
            await ctx.publish_committed(uow)

    return WorkerParts(
        handlers={
            WhatsAppConnected: on_activation,
            RequestActivation: on_activation,
            WhatsAppLoggedOut: on_logged_out,
            YClientsWebhookReceived: on_webhook,
        },
        on_give_up=on_give_up,
    )


def main() -> None:
    """Run the activation worker until SIGTERM."""
    worker_main(NAME, ACTIVATION, lambda s: s.ACTIVATION_PORT, setup)


if __name__ == "__main__":
    main()
