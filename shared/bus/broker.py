"""The broker connection and the confirmed publisher."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, DeliveryMode
from aio_pika.exceptions import AMQPError, DeliveryError
from aio_pika.exceptions import PublishError as PikaPublishError
from aiormq import spec

from shared.bus.errors import PublishError
from shared.bus.topology import EXCHANGE, declare_exchange, requires_consumer
from shared.messages import Message, encode

log = logging.getLogger(__name__)

_PUBLISH_FAILURES = (
    asyncio.TimeoutError,
    AMQPError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    DeliveryError,
    PikaPublishError,
    RuntimeError,
)


def amqp_message(msg: Message, *, headers: Mapping[str, Any] | None = None) -> aio_pika.Message:
    """The AMQP message for an envelope: id, correlation, type and time mirrored in the properties."""
    return aio_pika.Message(
        body=encode(msg),
        message_id=str(msg.id),
        correlation_id=msg.correlation_id,
        type=msg.type,
        timestamp=msg.occurred_at,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        headers=dict(headers or {}),
    )


def amqp_properties(msg: Message, *, headers: Mapping[str, Any] | None = None) -> spec.Basic.Properties:
    """The properties `amqp_message` gives an envelope, built directly: no `aio_pika.Message` per publish."""
    # An empty header table and a zero priority are left out rather than sent: consumers read both the same.
    return spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT.value,
        headers=dict(headers) if headers else None,
        message_id=str(msg.id),
        correlation_id=msg.correlation_id,
        message_type=msg.type,
        timestamp=msg.occurred_at,
    )


class Broker:
    """A robust connection plus one confirm-mode channel for publishing."""

    def __init__(self, url: str, *, name: str, publish_timeout_s: float = 5.0) -> None:
        self.url = url
        self.name = name
        self.publish_timeout_s = publish_timeout_s
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    @property
    def connection(self) -> AbstractRobustConnection:
        """The open connection (after `connect`)."""
        if self._connection is None:
            raise RuntimeError("broker not connected")
        return self._connection

    @property
    def is_connected(self) -> bool:
        """True while the connection and the publishing channel are open."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def connect(self, *, attempts: int | None = None) -> None:
        """Connect, retrying with backoff (forever unless `attempts` is given)."""
        delay = 0.5
        tried = 0
        while True:
            tried += 1
            try:
                self._connection = await aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": self.name}, timeout=10
                )
                self._channel = await self.open_channel(publisher_confirms=True)
                self._exchange = await declare_exchange(self._channel)
                log.info("broker connected")
                return
            except (TimeoutError, AMQPError, aiormq.exceptions.AMQPError, OSError) as exc:
                if attempts is not None and tried >= attempts:
                    raise
                log.warning("broker unreachable, retrying", extra={"error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay + random.uniform(0, delay / 2))
                delay = min(delay * 2, 10.0)

    async def open_channel(
        self, *, publisher_confirms: bool = True, prefetch: int | None = None
    ) -> AbstractRobustChannel:
        """A new channel; with confirms, `on_return_raises` so an unroutable publish is an error, not a silent drop."""
        # aio-pika refuses on_return_raises without confirms; such channels are for reading only.
        channel = await self.connection.channel(
            publisher_confirms=publisher_confirms, on_return_raises=publisher_confirms
        )
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def publish(self, msg: Message, *, headers: Mapping[str, Any] | None = None) -> None:
        """Publish to the topic exchange and wait for the confirm (raises PublishError).

        A message some worker must handle is published mandatory (unroutable = error); a pure notification
        (live updates for pages that may not be open) is not, so no listener is not a failure.
        """
        if not self.is_connected or self._channel is None or self._exchange is None:
            raise PublishError("broker not connected")
        # Straight to the channel under aio-pika's Exchange.publish (which only adds an aio_pika.Message to
        # build and a few checks): the gateway publishes once per request.
        try:
            channel = await self._channel.get_underlay_channel()
            await channel.basic_publish(
                encode(msg),
                exchange=EXCHANGE,
                routing_key=msg.type,
                properties=amqp_properties(msg, headers=headers),
                mandatory=requires_consumer(msg.type),
                timeout=self.publish_timeout_s,
            )
        except _PUBLISH_FAILURES as exc:
            raise PublishError(f"publish of {msg.type} not confirmed: {exc!r}") from exc

    async def publish_many(self, msgs: list[Message]) -> None:
        """Publish several messages pipelined on one channel, each awaiting its own confirm."""
        await asyncio.gather(*(self.publish(m) for m in msgs))

    async def publish_raw(
        self, message: aio_pika.Message, *, routing_key: str, exchange: str = EXCHANGE, mandatory: bool = True
    ) -> None:
        """Publish a prepared AMQP message (retry, dead-letter, replay, outbox) and wait for the confirm."""
        await self._publish(message, routing_key, to_exchange=exchange == EXCHANGE, mandatory=mandatory)

    async def _publish(
        self, message: aio_pika.Message, routing_key: str, *, to_exchange: bool, mandatory: bool
    ) -> None:
        if not self.is_connected or self._channel is None or self._exchange is None:
            raise PublishError("broker not connected")
        target = self._exchange if to_exchange else self._channel.default_exchange
        try:
            await target.publish(message, routing_key=routing_key, mandatory=mandatory, timeout=self.publish_timeout_s)
        except _PUBLISH_FAILURES as exc:
            raise PublishError(f"publish of {routing_key} not confirmed: {exc!r}") from exc

    async def queue_consumers(self, queue: str) -> int | None:
        """How many consumers a queue has (None when it can't be asked)."""
        if not self.is_connected:
            return None
        try:
            channel = await self.connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True, timeout=3)
                return int(declared.declaration_result.consumer_count or 0)
            finally:
                await channel.close()
        except (TimeoutError, AMQPError, aiormq.exceptions.AMQPError, OSError):
            return None

    async def close(self) -> None:
        """Close the connection (channels and consumers with it)."""
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()


def now_iso() -> str:
    """Current UTC time for headers."""
    return datetime.now(UTC).isoformat(timespec="seconds")
