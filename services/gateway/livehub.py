"""The live-update hub: one exclusive queue per gateway instance, fanned out in-process to the open pages.

Each instance binds its own auto-delete queue to the events the onboarding page shows, so any number of
replicas work behind a load balancer. Subscribers get bounded queues: a page that cannot keep up is
dropped (its EventSource reconnects and starts again from a snapshot), the hub never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge
from pydantic import ValidationError

from services.gateway.events import message_salon_id
from shared.bus.broker import Broker
from shared.bus.topology import LIVE_UPDATE_KEYS, declare_exchange
from shared.messages import Message, decode

log = logging.getLogger(__name__)

LIVE_EVENTS = MetricCounter("gateway_live_events_total", "Live-update messages received by this gateway", ["type"])
LIVE_DROPPED = MetricCounter("gateway_live_subscribers_dropped_total", "Streams dropped", ["reason"])
LIVE_STREAMS = Gauge("gateway_live_streams", "Open live-update streams of this gateway")


class TooManyStreams(Exception):
    """The key (an onboarding token) already has the maximum number of open streams."""


class HubClosed(Exception):
    """The hub is shutting down and accepts no new subscribers."""


class Subscription:
    """The events of some salons for one open page; iterate it, close it when the page goes away."""

    def __init__(self, hub: LiveHub, salon_ids: Iterable[int], key: str | None, maxsize: int) -> None:
        self.salon_ids = frozenset(salon_ids)
        self.key = key
        self.closed_reason: str | None = None
        self._hub = hub
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=maxsize + 1)
        self._maxsize = maxsize

    @property
    def closed(self) -> bool:
        """True once the subscription ended (closed by its owner, dropped, or hub shut down)."""
        return self.closed_reason is not None

    @property
    def pending(self) -> int:
        """Events queued and not read yet."""
        return self._queue.qsize()

    def offer(self, msg: Message) -> bool:
        """Queue an event without waiting; False when the subscriber is too far behind."""
        if self.closed:
            return True
        if self.pending >= self._maxsize:
            return False
        self._queue.put_nowait(msg)
        return True

    def end(self, reason: str) -> None:
        """Finish the stream: pending events are discarded, the iterator stops."""
        if self.closed:
            return
        self.closed_reason = reason
        while not self._queue.empty():
            self._queue.get_nowait()
        # The extra slot is reserved for this sentinel, so it always fits.
        self._queue.put_nowait(None)

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        self._hub.remove(self)
        self.end("closed")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LiveHub:
    """Consumes this instance's live-update queue and hands each event to the subscribers of its salon."""

    def __init__(
        self,
        *,
        subscriber_queue_size: int = 64,
        max_per_key: int = 5,
        queue_max_length: int = 10_000,
        message_ttl_ms: int = 60_000,
        queue_prefix: str = "gateway.live",
    ) -> None:
        self.subscriber_queue_size = subscriber_queue_size
        self.max_per_key = max_per_key
        self.queue_max_length = queue_max_length
        self.message_ttl_ms = message_ttl_ms
        # Named by us (not by the server) so the robust channel re-declares the same queue after a reconnect.
        self.queue_name = f"{queue_prefix}.{socket.gethostname()}.{uuid.uuid4().hex[:12]}"
        self._subs: set[Subscription] = set()
        self._by_salon: dict[int, set[Subscription]] = defaultdict(set)
        self._per_key: Counter[str] = Counter()
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._closing = False
        self.received = 0

    # ---- broker side ---------------------------------------------------------------------------------

    @property
    def is_consuming(self) -> bool:
        """True while the channel is open and the consumer registered (a readiness check)."""
        return self._channel is not None and not self._channel.is_closed and self._tag is not None

    async def start(self, broker: Broker) -> None:
        """Declare this instance's queue, bind it to the live-update keys and consume (restored after reconnects)."""
        channel = await broker.open_channel(publisher_confirms=False)
        try:
            exchange = await declare_exchange(channel)
            queue = await channel.declare_queue(
                self.queue_name,
                durable=False,
                exclusive=True,
                auto_delete=True,
                arguments={
                    "x-max-length": self.queue_max_length,
                    "x-overflow": "drop-head",
                    "x-message-ttl": self.message_ttl_ms,
                },
            )
            for key in LIVE_UPDATE_KEYS:
                await queue.bind(exchange, routing_key=key)
            # No acks: a lost live update is harmless, the next snapshot carries the truth.
            self._tag = await queue.consume(self._on_message, no_ack=True)
        except BaseException:
            await channel.close()
            raise
        self._channel, self._queue = channel, queue
        log.info("live updates consuming", extra={"queue": self.queue_name})

    async def stop(self) -> None:
        """End every stream and stop consuming."""
        self.close_streams()
        channel, self._channel, self._tag = self._channel, None, None
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except Exception as exc:  # the connection may already be gone at shutdown
                log.debug("live channel close failed", extra={"error": repr(exc)})

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        try:
            msg = decode(incoming.body)
        except ValidationError as exc:
            log.warning("undecodable live update dropped", extra={"error": str(exc)[:300], "type": incoming.type})
            return
        self.dispatch(msg)

    # ---- page side -----------------------------------------------------------------------------------

    def dispatch(self, msg: Message) -> int:
        """Hand a message to the subscribers of its salon; returns how many got it."""
        self.received += 1
        LIVE_EVENTS.labels(msg.type).inc()
        salon_id = message_salon_id(msg)
        if salon_id is None:
            return 0
        delivered = 0
        for sub in list(self._by_salon.get(salon_id, ())):
            if sub.offer(msg):
                delivered += 1
            else:
                log.info("slow live-update subscriber dropped", extra={"salon_id": salon_id})
                LIVE_DROPPED.labels("overflow").inc()
                self.remove(sub)
                sub.end("overflow")
        return delivered

    def subscribe(self, salon_ids: Iterable[int], *, key: str | None = None) -> Subscription:
        """A new subscription to the salons' events (TooManyStreams when `key` has its maximum open)."""
        if self._closing:
            raise HubClosed("the gateway is shutting down")
        if key is not None and self._per_key[key] >= self.max_per_key:
            raise TooManyStreams(key)
        sub = Subscription(self, salon_ids, key, self.subscriber_queue_size)
        self._subs.add(sub)
        for salon_id in sub.salon_ids:
            self._by_salon[salon_id].add(sub)
        if key is not None:
            self._per_key[key] += 1
        LIVE_STREAMS.inc()
        return sub

    def remove(self, sub: Subscription) -> None:
        """Forget a subscription (idempotent)."""
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        for salon_id in sub.salon_ids:
            subs = self._by_salon.get(salon_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_salon[salon_id]
        LIVE_STREAMS.dec()
        if sub.key is not None:
            self._per_key[sub.key] -= 1
            if self._per_key[sub.key] <= 0:
                del self._per_key[sub.key]

    def open_streams(self, key: str | None = None) -> int:
        """Open subscriptions, in total or for one key."""
        if key is not None:
            return self._per_key.get(key, 0)
        return len(self._subs)

    def close_streams(self) -> None:
        """End every open stream (before the HTTP server drains at shutdown) and refuse new ones."""
        self._closing = True
        for sub in list(self._subs):
            self.remove(sub)
            sub.end("shutdown")
