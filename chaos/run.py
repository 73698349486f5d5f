"""One scenario's run: its history, the watcher, the clients, and the verdict after the drain."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from chaos.invariants import Evaluation
from chaos.load import Client, Endpoints, LoadContext, LoadReport, Plan, Watcher, run_load
from chaos.model import OP_KINDS, History, Row
from chaos.observe import Drained, drain
from chaos.world import APP_ID, World


@dataclass(frozen=True)
class Timing:
    """How long operations, journeys and the drain may take."""

    op_timeout_s: float = 90.0
    activation_timeout_s: float = 90.0
    drain_timeout_s: float = 120.0


@dataclass
class ScenarioResult:
    """A scenario's row, the evaluation behind it, and notes for docs/chaos.md."""

    key: str
    title: str
    row: Row
    evaluation: Evaluation
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Scenario-specific figures (kills, answers during an outage, exit times ...) for tests and notes.
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No loss, no duplicate effect, no broken invariant."""
        return self.row.ok


class Run:
    """The load side of one scenario in a world."""

    def __init__(self, world: World, *, timing: Timing, seed: int) -> None:
        assert world.sessionmaker is not None and world.http is not None and world.broker is not None
        self.world = world
        self.timing = timing
        self.rng = random.Random(seed)
        self.history = History()
        self.watcher = Watcher(world.sessionmaker)
        self.client = Client(
            world.http,
            self.endpoints,
            self.history,
            partner_token=world.partner_token,
            application_id=APP_ID,
            op_timeout_s=timing.op_timeout_s,
            rng=self.rng,
        )
        self.ctx = LoadContext(
            client=self.client,
            watcher=self.watcher,
            history=self.history,
            broker=world.broker,
            whatsapp_worker=world.whatsapp_worker,
            activation_timeout_s=timing.activation_timeout_s,
            rng=self.rng,
        )
        self.reports: list[LoadReport] = []
        self._stop = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self.started = time.monotonic()

    def endpoints(self) -> Endpoints:
        """The instances running now (a restarted one keeps its port)."""
        return Endpoints(gateways=self.world.urls("gateway"), phones=self.world.urls("whatsapp"))

    async def __aenter__(self) -> Self:
        self._watch = asyncio.create_task(self.watcher.run(self._stop))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._watch is not None:
            await self._watch

    async def load(self, plans: Sequence[Plan], *, spacing_s: float) -> LoadReport:
        """Run journeys for `plans`, one started every `spacing_s`."""
        deadline = spacing_s * len(plans) + self.timing.op_timeout_s * 3 + self.timing.activation_timeout_s
        report = await run_load(self.ctx, plans, spacing_s=spacing_s, deadline_s=deadline)
        self.reports.append(report)
        return report

    async def wait_active(self, salon_ids: Sequence[int], timeout: float) -> int:
        """How many of the salons reached `active` within `timeout`."""
        results = await asyncio.gather(*(self.watcher.wait_status(s, ("active",), timeout) for s in salon_ids))
        return sum(1 for r in results if r is not None)

    async def drain(self) -> Drained:
        """Wait for the system to settle and evaluate the history."""
        return await drain(self.world, self.history.ops, timeout_s=self.timing.drain_timeout_s)

    def notes(self, drained: Drained) -> list[str]:
        """What every scenario reports besides its row."""
        ev = drained.evaluation
        journeys = sum(r.journeys for r in self.reports)
        unfinished = sum(r.unfinished for r in self.reports)
        skipped = [s for r in self.reports for s in r.skipped]
        notes = [
            f"{journeys} salon journeys, {self.history.attempts()} requests in all (retries included); "
            f"{unfinished} journey(s) cut at the load deadline.",
            "per operation — "
            + "; ".join(
                f"{kind}: sent {t.sent}, acked {t.acknowledged}, applied {t.applied}, lost {t.lost}"
                for kind in OP_KINDS
                if (t := ev.tallies[kind]).sent
            ),
            f"drain: {'quiet' if drained.quiet else 'NOT quiet (deadline hit)'} after {drained.seconds:.0f} s; "
            f"{drained.observed.queued} message(s) still queued, {drained.observed.outbox_left} in the outbox.",
        ]
        if not self.world.whatsapp_worker:
            notes.append(
                "no whatsapp worker (services/whatsapp/__main__.py missing): the harness published "
                "`whatsapp.connected` itself instead of pairing and scanning."
            )
        if skipped:
            notes.append(f"journeys stopped early: {len(skipped)} — " + "; ".join(skipped[:8]))
        refused = [op.describe() + f": {op.error}" for op in self.history.ops if not op.acked and op.error]
        if refused:
            notes.append(f"never acknowledged: {len(refused)} — " + "; ".join(refused[:6]))
        for label, items in (
            ("LOST", ev.lost),
            ("DUPLICATE", ev.duplicates),
            ("BROKEN", ev.anomalies),
            ("dead-lettered", [f"{d.queue}.dead {d.type} salon {d.salon_id}: {d.reason}" for d in ev.dead]),
        ):
            if items:
                notes.append(f"{label}: {len(items)} — " + "; ".join(items[:10]))
        ours, library = self.world.log_problems()
        if ours:
            notes.append(
                "service log lines at ERROR (or tracebacks) in this world so far: "
                + "; ".join(f"{what} ×{count}" for what, count in ours.most_common(6))
            )
        if library:
            notes.append(
                f"{library} ERROR line(s) from aio-pika/aiormq about cut connections "
                "(the client library's reconnect callbacks; no effect on the counts above)."
            )
        return notes
