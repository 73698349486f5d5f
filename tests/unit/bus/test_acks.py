"""When one `multiple` ack may settle a batch: never when it would also cover a delivery still being handled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from shared.bus.acks import Unsettled


@dataclass(eq=False)
class FakeChannel:
    """Compared by identity, as aiormq's channels are."""

    is_closed: bool = False


@dataclass
class FakeDelivery:
    channel: FakeChannel
    delivery_tag: int


def deliveries(channel: FakeChannel, *tags: int) -> list[AbstractIncomingMessage]:
    return [cast(AbstractIncomingMessage, cast(Any, FakeDelivery(channel, tag))) for tag in tags]


def test_a_batch_holding_every_unsettled_tag_up_to_its_last_is_settled_by_its_last() -> None:
    channel = FakeChannel()
    unsettled = Unsettled()
    first = deliveries(channel, 1, 2, 3)
    later = deliveries(channel, 4, 5)
    for d in first + later:
        unsettled.add(d)
    last = unsettled.multiple_ack_for(first)
    assert last is first[2]


def test_a_lower_delivery_still_in_hand_forces_one_ack_each() -> None:
    channel = FakeChannel()
    unsettled = Unsettled()
    [alone, *batch] = deliveries(channel, 1, 2, 3)
    for d in [alone, *batch]:
        unsettled.add(d)
    assert unsettled.multiple_ack_for(batch) is None
    unsettled.settled(alone)
    assert unsettled.multiple_ack_for(batch) is batch[-1]


def test_deliveries_of_two_channels_are_never_settled_together() -> None:
    old, new = FakeChannel(), FakeChannel()
    unsettled = Unsettled()
    batch = deliveries(old, 7) + deliveries(new, 1)
    for d in batch:
        unsettled.add(d)
    assert unsettled.multiple_ack_for(batch) is None


def test_tags_of_a_closed_channel_are_forgotten_when_a_new_one_delivers() -> None:
    old, new = FakeChannel(), FakeChannel()
    unsettled = Unsettled()
    for d in deliveries(old, 1, 2, 3):
        unsettled.add(d)
    old.is_closed = True
    for d in deliveries(new, 1):
        unsettled.add(d)
    assert len(unsettled) == 1
