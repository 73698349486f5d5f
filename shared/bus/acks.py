"""Which deliveries of a channel are still unsettled: when one `multiple` ack settles exactly a batch."""

from __future__ import annotations

from collections.abc import Sequence

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError


def _channel_of(incoming: AbstractIncomingMessage) -> object | None:
    try:
        return incoming.channel
    except ChannelInvalidStateError:
        return None


class Unsettled:
    """Delivery tags not yet acked or rejected, per channel (tags restart on every channel, say after a reconnect).

    A tag whose message ended without being settled (cancelled at shutdown) stays: it only ever makes a batch
    fall back to one ack per message, never lets a `multiple` ack cover a delivery that was not applied.
    """

    def __init__(self) -> None:
        self._tags: dict[object, set[int]] = {}

    def add(self, incoming: AbstractIncomingMessage) -> None:
        """A delivery arrived."""
        channel = _channel_of(incoming)
        if channel is None or incoming.delivery_tag is None:
            return
        if channel not in self._tags:
            # A new channel: the old ones' tags mean nothing any more.
            self._tags = {c: tags for c, tags in self._tags.items() if not getattr(c, "is_closed", True)}
        self._tags.setdefault(channel, set()).add(incoming.delivery_tag)

    def settled(self, incoming: AbstractIncomingMessage) -> None:
        """The delivery was acked or rejected."""
        channel = _channel_of(incoming)
        if channel is not None and incoming.delivery_tag is not None:
            self._tags.get(channel, set()).discard(incoming.delivery_tag)

    def multiple_ack_for(self, batch: Sequence[AbstractIncomingMessage]) -> AbstractIncomingMessage | None:
        """The delivery whose `multiple` ack settles exactly `batch`, or None when it would settle more."""
        if not batch:
            return None
        channel = _channel_of(batch[0])
        if channel is None or any(_channel_of(m) is not channel or m.delivery_tag is None for m in batch):
            return None
        tags = {m.delivery_tag for m in batch}
        top = max(m for m in tags if m is not None)
        if any(tag <= top and tag not in tags for tag in self._tags.get(channel, ())):
            return None
        return next(m for m in batch if m.delivery_tag == top)

    def __len__(self) -> int:
        return sum(len(tags) for tags in self._tags.values())
