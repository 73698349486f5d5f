"""The consumer: ack after success, retry transient failures through wait queues, park the rest in `.dead`."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError

from shared.bus import topology as t
from shared.bus.acks import Unsettled
from shared.bus.batching import BatchHandler, BatchPolicy, MicroBatcher
from shared.bus.broker import Broker, now_iso
from shared.bus.errors import PublishError, is_permanent
from shared.logging import log_context
from shared.messages import Message, decode
from shared.metrics import HANDLER_SECONDS, MESSAGES

log = logging.getLogger(__name__)

# Header values are bounded so a huge traceback can't blow the frame size.
_MAX_ERROR_LEN = 500


@dataclass(frozen=True)
class Delivery:
    """What a handler may want to know about the delivery besides the message."""

    attempt: int
    redelivered: bool
    headers: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[Message, Delivery], Awaitable[None]]
GiveUpHook = Callable[[Message, str], Awaitable[None]]


def _previous_attempts(headers: Mapping[str, Any]) -> int:
    """Failed attempts so far; a garbled header counts as none rather than wedging the message."""
    try:
        return max(0, int(str(headers.get(t.H_ATTEMPT, 0))))
    except ValueError:
        return 0


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_ERROR_LEN]


class Consumer:
    """Consumes one work queue and dispatches each message to the handler for its type."""

    def __init__(
        self,
        broker: Broker,
        queue: t.WorkQueue,
        handlers: Mapping[type[Message], Handler],
        *,
        retry_delays_ms: list[int],
        prefetch: int = 32,
        on_give_up: GiveUpHook | None = None,
        batch_handlers: Mapping[type[Message], BatchHandler] | None = None,
        batch_policy: BatchPolicy | None = None,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.handlers = dict(handlers)
        self.retry_delays_ms = list(retry_delays_ms)
        self.prefetch = prefetch
        self.on_give_up = on_give_up
        policy = batch_policy or BatchPolicy()
        # Every batched type keeps its one-message handler: a failed batch falls back to it.
        missing = [k.__name__ for k in (batch_handlers or {}) if k not in self.handlers]
        if missing:
            raise ValueError(f"batch handlers without a one-message handler: {', '.join(missing)}")
        self.batchers = {
            k: MicroBatcher(h, policy, settle=self._settle_batch) for k, h in (batch_handlers or {}).items()
        }
        self._unsettled = Unsettled()
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.processed = 0

    @property
    def max_attempts(self) -> int:
        """Total tries of one message: the first plus one per retry step."""
        return len(self.retry_delays_ms) + 1

    @property
    def is_consuming(self) -> bool:
        """True while the channel is open and the consumer is registered."""
        return self._channel is not None and not self._channel.is_closed and self._tag is not None

    async def start(self) -> None:
        """Declare the topology and start consuming (the robust channel re-registers after reconnects)."""
        self._channel = await self.broker.open_channel(publisher_confirms=True, prefetch=self.prefetch)
        self._queue = await t.declare_work_queue(self._channel, self.queue, self.retry_delays_ms)
        self._tag = await self._queue.consume(self._on_message)
        log.info("consuming", extra={"queue": self.queue.name})

    async def stop(self, *, drain_timeout_s: float = 8.0) -> None:
        """Stop taking new messages and let in-flight ones finish (they are acked or requeued)."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:  # the channel may already be gone on shutdown
                log.debug("cancel failed", extra={"error": repr(exc)})
            self._tag = None
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=drain_timeout_s)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        # Before any await: deliveries are registered in the order the broker numbered them.
        self._unsettled.add(incoming)
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._process(incoming)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, incoming: AbstractIncomingMessage) -> None:
        headers = dict(incoming.headers or {})
        attempt = _previous_attempts(headers) + 1
        try:
            msg = decode(incoming.body)
        except ValidationError as exc:
            await self._dead(incoming, headers, attempt, f"undecodable message: {_short(exc)}")
            return
        handler = self.handlers.get(type(msg))
        if handler is None:
            await self._dead(incoming, headers, attempt, f"no handler for {msg.type} in {self.queue.name}")
            return
        ctx = Delivery(attempt=attempt, redelivered=bool(incoming.redelivered), headers=headers)
        with log_context(
            message_id=str(msg.id), correlation_id=msg.correlation_id, salon_id=msg.salon_id, type=msg.type
        ):
            started = time.perf_counter()
            batcher = self.batchers.get(type(msg))
            if batcher is not None and await batcher.submit(msg, incoming):
                # Applied with its batch, and acked with it (`_settle_batch`).
                HANDLER_SECONDS.labels(self.queue.name, msg.type).observe(time.perf_counter() - started)
                self._count_ok(msg, attempt)
                return
            try:
                await handler(msg, ctx)
            except asyncio.CancelledError:
                # Not acked: the broker redelivers it when this channel closes.
                raise
            except Exception as exc:
                MESSAGES.labels(self.queue.name, msg.type, "failed").inc()
                await self._failed(incoming, headers, msg, attempt, exc)
                return
            finally:
                HANDLER_SECONDS.labels(self.queue.name, msg.type).observe(time.perf_counter() - started)
            await self._acked(incoming, msg, attempt)

    async def _settle_batch(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        """Ack an applied batch: one `multiple` ack when it covers exactly the batch, else one ack each."""
        last = self._unsettled.multiple_ack_for(deliveries)
        if last is not None:
            await last.ack(multiple=True)
        else:
            for incoming in deliveries:
                await incoming.ack()
        for incoming in deliveries:
            self._unsettled.settled(incoming)

    async def _acked(self, incoming: AbstractIncomingMessage, msg: Message, attempt: int) -> None:
        await incoming.ack()
        self._unsettled.settled(incoming)
        self._count_ok(msg, attempt)

    def _count_ok(self, msg: Message, attempt: int) -> None:
        MESSAGES.labels(self.queue.name, msg.type, "ok").inc()
        self.processed += 1
        log.debug("handled", extra={"attempt": attempt})

    async def _failed(
        self, incoming: AbstractIncomingMessage, headers: dict[str, Any], msg: Message, attempt: int, exc: Exception
    ) -> None:
        reason = _short(exc)
        if is_permanent(exc):
            log.warning("permanent failure", extra={"error": reason, "attempt": attempt})
            await self._give_up(msg, f"permanent: {reason}")
            await self._dead(incoming, headers, attempt, f"permanent: {reason}")
        elif attempt >= self.max_attempts:
            log.warning("retries exhausted", extra={"error": reason, "attempt": attempt})
            await self._give_up(msg, f"exhausted after {attempt} attempts: {reason}")
            await self._dead(incoming, headers, attempt, f"exhausted after {attempt} attempts: {reason}")
        else:
            delay = self.retry_delays_ms[attempt - 1]
            log.info("transient failure, will retry", extra={"error": reason, "attempt": attempt, "delay_ms": delay})
            await self._forward(
                incoming,
                headers,
                self.queue.retry(delay),
                {
                    t.H_ATTEMPT: attempt,
                    t.H_LAST_ERROR: reason,
                    t.H_FIRST_FAILED_AT: headers.get(t.H_FIRST_FAILED_AT) or now_iso(),
                },
            )

    async def _give_up(self, msg: Message, reason: str) -> None:
        if self.on_give_up is None:
            return
        try:
            await self.on_give_up(msg, reason)
        except Exception as exc:
            # The message still goes to .dead; replay will run the handler again.
            log.error("give-up hook failed", extra={"error": _short(exc)})

    async def _dead(
        self, incoming: AbstractIncomingMessage, headers: dict[str, Any], attempt: int, reason: str
    ) -> None:
        await self._forward(
            incoming,
            headers,
            self.queue.dead,
            {t.H_ATTEMPT: attempt, t.H_DEAD_REASON: reason[:_MAX_ERROR_LEN], t.H_DEAD_AT: now_iso()},
        )

    async def _forward(
        self, incoming: AbstractIncomingMessage, headers: dict[str, Any], queue_name: str, extra: dict[str, Any]
    ) -> None:
        """Copy to `queue_name` with confirm, then ack the original: a crash between duplicates, never loses."""
        new_headers = {**headers, **extra}
        new_headers.setdefault(t.H_ORIGINAL_QUEUE, self.queue.name)
        new_headers.setdefault(t.H_ROUTING_KEY, incoming.routing_key or "")
        copy = aio_pika.Message(
            body=incoming.body,
            headers=new_headers,
            message_id=incoming.message_id,
            correlation_id=incoming.correlation_id,
            type=incoming.type,
            timestamp=incoming.timestamp,
            content_type=incoming.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self.broker.publish_raw(copy, routing_key=queue_name, exchange="")
        except PublishError as exc:
            log.error("could not park/retry message; leaving it for redelivery", extra={"error": _short(exc)})
            # Give the broker a moment before the redelivery loop spins.
            await asyncio.sleep(random.uniform(0.5, 1.5))
            await incoming.nack(requeue=True)
            self._unsettled.settled(incoming)
            return
        await incoming.ack()
        self._unsettled.settled(incoming)
