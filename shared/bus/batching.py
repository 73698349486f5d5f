"""Micro-batching: messages of one type that are waiting at the same moment are applied in one transaction.

Under load a consumer holds up to `prefetch` deliveries; applying each in its own transaction pays a commit
and a handful of round trips per message. A batch handler applies the messages waiting together with
set-based statements and one commit. When idle a batch is a single message, started at once, so nothing waits
for a batch to fill. A batch that fails is not retried as a batch: every message in it goes through the
ordinary one-message path (its own transaction, retry and dead-letter rules), so one bad message never fails
its neighbours.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.messages import Message
from shared.metrics import BATCH_SIZE

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]
# Called with the submitted tokens (the consumer's deliveries) after the handler succeeded, before the
# submitters learn it: the consumer settles the whole batch at once there.
Settle = Callable[[Sequence[Any]], Awaitable[None]]


@dataclass(frozen=True)
class BatchPolicy:
    """How big a batch may grow and how many run at once (the next one fills while the others commit)."""

    max_size: int = 32
    concurrency: int = 1


class MicroBatcher:
    """Collects submitted messages and hands them to `handler` in batches."""

    def __init__(self, handler: BatchHandler, policy: BatchPolicy, *, settle: Settle | None = None) -> None:
        if policy.max_size < 1 or policy.concurrency < 1:
            raise ValueError("batch size and concurrency must be positive")
        self._handler = handler
        self._policy = policy
        self._settle = settle
        self._pending: list[tuple[Message, Any, asyncio.Future[bool]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self.batches = 0

    async def submit(self, msg: Message, token: Any = None) -> bool:
        """Wait until `msg` was applied in a batch (True) or its batch failed (False: apply it alone).

        `token` is handed to `settle` with the rest of the batch when it was applied.
        """
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((msg, token, done))
        self._schedule()
        return await done

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or len(self._running) >= self._policy.concurrency:
            return
        self._scheduled = True
        # One turn of the loop later: deliveries read from the socket together have all been submitted by then.
        asyncio.get_running_loop().call_soon(self._start, context=contextvars.Context())

    def _start(self) -> None:
        self._scheduled = False
        while self._pending and len(self._running) < self._policy.concurrency:
            size = self._policy.max_size
            batch, self._pending = self._pending[:size], self._pending[size:]
            # A fresh context: the batch must not log under the first message's ids.
            task = asyncio.get_running_loop().create_task(self._run(batch), context=contextvars.Context())
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._schedule()

    async def _run(self, batch: list[tuple[Message, Any, asyncio.Future[bool]]]) -> None:
        ok = False
        try:
            await self._handler([msg for msg, _, _ in batch])
            ok = True
            self.batches += 1
            BATCH_SIZE.labels(batch[0][0].type).observe(len(batch))
        except Exception as exc:
            log.info(
                "batch failed, applying its messages one by one", extra={"size": len(batch), "error": repr(exc)[:300]}
            )
        try:
            if ok and self._settle is not None:
                await self._settle([token for _, token, _ in batch])
        except Exception as exc:
            # Applied but not settled (say, the channel closed): the broker redelivers, the claim absorbs it.
            log.warning("batch applied but not settled", extra={"size": len(batch), "error": repr(exc)[:300]})
        finally:
            for _, _, done in batch:
                if not done.done():
                    done.set_result(ok)
