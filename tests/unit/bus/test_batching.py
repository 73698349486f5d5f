"""The micro-batcher on its own: who shares a batch, how many run at once, what a failure returns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.bus.batching import BatchPolicy, MicroBatcher
from shared.messages import Message, RegistrationRequested


def msg(salon_id: int) -> RegistrationRequested:
    return RegistrationRequested(salon_id=salon_id, data={"salon_ids": [salon_id]})


async def turns(n: int = 5) -> None:
    """Let the loop run a few turns (no wall-clock wait): scheduled batches start."""
    for _ in range(n):
        await asyncio.sleep(0)


class Gate:
    """A batch handler that holds every batch until released, recording sizes and the peak in flight."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.in_flight = 0
        self.peak = 0
        self.release = asyncio.Event()

    async def handle(self, msgs: Sequence[Message]) -> None:
        self.sizes.append(len(msgs))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1


async def test_a_lone_message_goes_at_once_and_the_next_ones_wait_for_a_free_slot() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate.handle, BatchPolicy(max_size=4, concurrency=2))
    first = asyncio.create_task(batcher.submit(msg(1)))
    await turns()
    assert gate.sizes == [1], "an idle batcher does not wait for company"
    rest = [asyncio.create_task(batcher.submit(msg(i))) for i in range(2, 12)]
    await turns()
    # One slot was free: the ten waiting ones filled a batch of four; six wait for a slot.
    assert gate.sizes == [1, 4] and gate.peak == 2
    gate.release.set()
    assert await asyncio.gather(first, *rest) == [True] * 11
    assert sorted(gate.sizes) == [1, 2, 4, 4] and gate.peak == 2


async def test_a_failed_batch_tells_each_of_its_messages_to_go_alone() -> None:
    async def refuse(msgs: Sequence[Message]) -> None:
        raise RuntimeError("database said no")

    batcher = MicroBatcher(refuse, BatchPolicy())
    assert await asyncio.gather(*(batcher.submit(msg(i)) for i in range(5))) == [False] * 5
    assert batcher.batches == 0


def test_a_policy_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        MicroBatcher(Gate().handle, BatchPolicy(max_size=0))
