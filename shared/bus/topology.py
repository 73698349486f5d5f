"""The broker topology, declared once here and idempotently by every service at start-up (DESIGN §3).

Work queues are durable quorum queues with at-least-once dead-lettering; failed messages wait in one
retry queue per delay step (all messages in a wait queue share its TTL, so expiry at the head is exact),
then dead-letter straight back to their work queue through the default exchange.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared import messages as m

EXCHANGE = "marketplace"
# Poison messages that crash a consumer before it can ack are parked after this many deliveries.
DELIVERY_LIMIT = 10

# Headers our consumer sets. Since 3.13 "x-" headers belong to the broker (client-set x-death is not
# interpreted), so ours carry their own prefix and we count attempts ourselves.
H_ATTEMPT = "mp-attempt"
H_LAST_ERROR = "mp-last-error"
H_DEAD_REASON = "mp-dead-reason"
H_ORIGINAL_QUEUE = "mp-original-queue"
H_ROUTING_KEY = "mp-routing-key"
H_FIRST_FAILED_AT = "mp-first-failed-at"
H_DEAD_AT = "mp-dead-at"


@dataclass(frozen=True)
class WorkQueue:
    """A consuming service's queue, the routing keys bound to it, and its retry and dead queues."""

    name: str
    routing_keys: tuple[str, ...]

    @property
    def dead(self) -> str:
        """The parking queue for messages that failed for good."""
        return f"{self.name}.dead"

    def retry(self, delay_ms: int) -> str:
        """The wait queue for one delay step."""
        return f"{self.name}.retry.{delay_ms}ms"


REGISTRATION = WorkQueue("registration", (m.RegistrationRequested.ROUTING_KEY,))
# Enrichment waits on the shared YClients rate limit; in its own queue with a small prefetch it neither holds
# registrations back nor sits unacked by the dozen (each worker restart would count a delivery against them).
# It subscribes to `registration.completed` itself (one follow-up event per registered salon, not an event plus
# a command); `registration.enrichment_requested` remains for asking again (the sweep, an operator).
ENRICHMENT = WorkQueue("enrichment", (m.RegistrationCompleted.ROUTING_KEY, m.EnrichmentRequested.ROUTING_KEY))
WHATSAPP = WorkQueue(
    "whatsapp", (m.RequestPairing.ROUTING_KEY, m.RequestPause.ROUTING_KEY, m.RequestLogout.ROUTING_KEY)
)
ACTIVATION = WorkQueue(
    "activation",
    (
        m.WhatsAppConnected.ROUTING_KEY,
        m.WhatsAppLoggedOut.ROUTING_KEY,
        m.RequestActivation.ROUTING_KEY,
        m.YClientsWebhookReceived.ROUTING_KEY,
    ),
)
WORK_QUEUES: tuple[WorkQueue, ...] = (REGISTRATION, ENRICHMENT, WHATSAPP, ACTIVATION)
# `yclients.data_changed` has no consumer yet (the AI administrator is to come): its messages wait here,
# capped in length and age, so a data webhook is never unroutable and the future consumer finds a backlog.
DATA_CHANGES = "yclients.data_changes"
DATA_CHANGES_ARGUMENTS: dict[str, aio_pika.abc.FieldValue] = {
    "x-queue-type": "quorum",
    "x-max-length": 100_000,
    "x-overflow": "drop-head",
    "x-message-ttl": 7 * 24 * 3600 * 1000,
}
_CONSUMED_KEYS = frozenset(
    [*(key for queue in WORK_QUEUES for key in queue.routing_keys), m.YClientsDataChanged.ROUTING_KEY]
)


def requires_consumer(routing_key: str) -> bool:
    """True when a work queue must receive messages with this key (so an unroutable publish is an error)."""
    return routing_key in _CONSUMED_KEYS


# What the onboarding page shows live; each gateway replica binds its own exclusive queue to these.
LIVE_UPDATE_KEYS: tuple[str, ...] = (
    m.RegistrationCompleted.ROUTING_KEY,
    m.CompanyEnriched.ROUTING_KEY,
    m.QrIssued.ROUTING_KEY,
    m.PairingCodeIssued.ROUTING_KEY,
    m.PairingExpired.ROUTING_KEY,
    m.WhatsAppConnected.ROUTING_KEY,
    m.WhatsAppDisconnected.ROUTING_KEY,
    m.WhatsAppLoggedOut.ROUTING_KEY,
    m.ActivationCompleted.ROUTING_KEY,
    m.ActivationFailed.ROUTING_KEY,
    m.IntegrationStatusChanged.ROUTING_KEY,
)


def work_queue_arguments(queue: WorkQueue) -> dict[str, aio_pika.abc.FieldValue]:
    """Quorum queue with a delivery limit and at-least-once dead-lettering to `<queue>.dead`."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue.dead,
        # Without reject-publish the broker silently falls back to at-most-once dead-lettering.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_exchange(channel: AbstractChannel) -> AbstractExchange:
    """The one durable topic exchange every message is published to."""
    return await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_work_queue(channel: AbstractChannel, queue: WorkQueue, retry_delays_ms: list[int]) -> AbstractQueue:
    """Declare a work queue with its bindings, retry wait queues and dead queue (idempotent)."""
    exchange = await declare_exchange(channel)
    await channel.declare_queue(queue.dead, durable=True, arguments={"x-queue-type": "quorum"})
    for delay in retry_delays_ms:
        await channel.declare_queue(
            queue.retry(delay),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue.name,
                # Expiry back to the work queue must not lose a message either.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
    work = await channel.declare_queue(queue.name, durable=True, arguments=work_queue_arguments(queue))
    for key in queue.routing_keys:
        await work.bind(exchange, routing_key=key)
    return work


async def declare_all(channel: AbstractChannel, retry_delays_ms: list[int]) -> None:
    """Declare the whole topology (used by tools and tests that publish before any worker started)."""
    for queue in WORK_QUEUES:
        await declare_work_queue(channel, queue, retry_delays_ms)
    exchange = await declare_exchange(channel)
    changes = await channel.declare_queue(DATA_CHANGES, durable=True, arguments=DATA_CHANGES_ARGUMENTS)
    await changes.bind(exchange, routing_key=m.YClientsDataChanged.ROUTING_KEY)


def queue_by_name(name: str) -> WorkQueue:
    """The work queue called `name` (KeyError otherwise)."""
    for queue in WORK_QUEUES:
        if queue.name == name:
            return queue
    raise KeyError(name)
