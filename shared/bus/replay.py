"""Replay of dead letters (DESIGN §3 Replay): list what waits in `<queue>.dead`, move selected messages back.

`python -m shared.bus.replay list [QUEUE] [--json]`
`python -m shared.bus.replay move [QUEUE] (--salon ID ... | --type KEY ... | --all) [--no-dry-run] [--limit N]`

Reading is non-destructive: every message is fetched with basic.get and held unacked, then requeued in the
order it came (quorum queues serve returned messages first; one parked meanwhile may land between them).
Requeueing raises the `x-delivery-count` of the dead copy; `.dead` queues have no delivery limit, so that
is harmless.
A move republishes to the exchange with the original routing key and acks the dead copy only after the
broker confirmed: an interruption at any point leaves each message in `.dead`, or republished, or both
(a duplicate the idempotent consumers absorb) — never lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aio_pika
import aiormq
import typer
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelClosed
from pydantic import ValidationError
from yarl import URL

from shared.bus import topology as t
from shared.bus.broker import Broker, now_iso
from shared.bus.errors import PublishError
from shared.config import Settings
from shared.messages import decode

# Our own prefix, like the consumer's headers (topology): "x-" headers belong to the broker since 3.13.
H_REPLAYED_AT = "mp-replayed-at"
H_REPLAY_COUNT = "mp-replay-count"

# What the failed life of a message left in its headers; the replayed copy starts its attempts afresh.
_RESET_HEADERS = frozenset(
    {
        t.H_ATTEMPT,
        t.H_DEAD_REASON,
        t.H_LAST_ERROR,
        t.H_DEAD_AT,
        t.H_FIRST_FAILED_AT,
        # Set by the broker when it dead-letters; brokers >= 3.13 ignore them from clients, older ones append.
        "x-death",
        "x-first-death-reason",
        "x-first-death-queue",
        "x-first-death-exchange",
        "x-last-death-reason",
        "x-last-death-queue",
        "x-last-death-exchange",
        "x-delivery-count",
    }
)
_GET_TIMEOUT_S = 5.0

T = TypeVar("T")


class DeadQueueMissing(Exception):
    """The `.dead` queue does not exist (no worker for that queue has started on this vhost)."""


@dataclass(frozen=True)
class DeadMessage:
    """One message parked in a `.dead` queue, as an operator needs to see it."""

    message_id: str | None
    type: str | None
    routing_key: str | None
    salon_id: int | None
    attempts: int | None
    reason: str
    dead_at: datetime | None
    occurred_at: datetime | None
    correlation_id: str | None
    replay_count: int

    def age_s(self, now: datetime | None = None) -> float | None:
        """Seconds since it was parked (None when unknown)."""
        if self.dead_at is None:
            return None
        return ((now or datetime.now(UTC)) - self.dead_at).total_seconds()

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "message_id": self.message_id,
            "type": self.type,
            "routing_key": self.routing_key,
            "salon_id": self.salon_id,
            "attempts": self.attempts,
            "reason": self.reason,
            "dead_at": self.dead_at.isoformat() if self.dead_at else None,
            "age_s": None if (age := self.age_s()) is None else round(age, 1),
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "correlation_id": self.correlation_id,
            "replay_count": self.replay_count,
        }


@dataclass
class MoveReport:
    """What a move did (or, in a dry run, would do)."""

    dry_run: bool
    moved: list[DeadMessage] = field(default_factory=list)
    kept: list[DeadMessage] = field(default_factory=list)
    failed: list[tuple[DeadMessage, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for humans."""
        verb = "would move" if self.dry_run else "moved"
        text = f"{verb} {len(self.moved)}, kept {len(self.kept)} in .dead"
        if self.failed:
            text += f", failed {len(self.failed)} (still in .dead)"
        return text


Select = Callable[[DeadMessage], bool]


def selector(*, salons: Iterable[int] = (), types: Iterable[str] = (), everything: bool = False) -> Select:
    """Messages of any of `salons` and of any of `types` (an empty filter matches all); `everything` = all."""
    salon_set, type_set = set(salons), set(types)
    if everything:
        return lambda _: True
    if not salon_set and not type_set:
        raise ValueError("choose --salon, --type or --all")

    def select(dead: DeadMessage) -> bool:
        if salon_set and dead.salon_id not in salon_set:
            return False
        return not type_set or dead.type in type_set or dead.routing_key in type_set

    return select


# ---- reading a dead message ---------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(str(_text(value)))
    except ValueError:
        return None


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    text = _text(value)
    if not text:
        return None
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The broker's own record of the dead-lettering into `.dead` (delivery limit), when there is one."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    for death in deaths:
        # Expiries from our retry wait queues are recorded too; they are not why it is dead.
        if isinstance(death, Mapping) and _text(death.get("reason")) != "expired":
            return death
    return None


def original_routing_key(incoming: AbstractIncomingMessage, body_type: str | None) -> str | None:
    """The key it was first published with: our header, the broker's dead-letter record, or its type."""
    headers = dict(incoming.headers or {})
    key = _text(headers.get(t.H_ROUTING_KEY))
    if key:
        return key
    death = _first_death(headers)
    if death is not None and _text(death.get("exchange")) == t.EXCHANGE:
        keys = death.get("routing-keys")
        if isinstance(keys, list) and keys:
            return _text(keys[0])
    return incoming.type or body_type


def describe(incoming: AbstractIncomingMessage) -> DeadMessage:
    """What an operator needs to know about one dead message, from its headers and body."""
    headers = dict(incoming.headers or {})
    salon_id: int | None = None
    body_type: str | None = None
    occurred_at: datetime | None = None
    try:
        msg = decode(incoming.body)
        salon_id, body_type, occurred_at = msg.salon_id, msg.type, msg.occurred_at
    except ValidationError:
        # Undecodable messages are listed too; take what a partial JSON still tells.
        try:
            raw = json.loads(incoming.body)
        except ValueError:
            raw = None
        if isinstance(raw, dict):
            salon_id = _int(raw.get("salon_id"))
            body_type = _text(raw.get("type"))
    death = _first_death(headers)
    reason = _text(headers.get(t.H_DEAD_REASON))
    dead_at = _parse_time(headers.get(t.H_DEAD_AT))
    attempts = _int(headers.get(t.H_ATTEMPT))
    if reason is None and death is not None:
        why = _text(death.get("reason")) or _text(headers.get("x-first-death-reason")) or "unknown"
        queue = _text(death.get("queue")) or _text(headers.get("x-first-death-queue")) or "?"
        reason = f"dead-lettered by the broker: {why} in {queue}"
        dead_at = dead_at or _parse_time(death.get("time"))
    if attempts is None:
        attempts = _int(headers.get("x-delivery-count"))
    return DeadMessage(
        message_id=incoming.message_id,
        type=incoming.type or body_type,
        routing_key=original_routing_key(incoming, body_type),
        salon_id=salon_id,
        attempts=attempts,
        reason=reason or "unknown",
        dead_at=dead_at or _aware(incoming.timestamp),
        occurred_at=occurred_at,
        correlation_id=incoming.correlation_id,
        replay_count=_int(headers.get(H_REPLAY_COUNT)) or 0,
    )


def replay_copy(incoming: AbstractIncomingMessage) -> aio_pika.Message:
    """The republished copy: same id, body and correlation; attempt counting restarts; replay recorded."""
    headers = {k: v for k, v in (incoming.headers or {}).items() if k not in _RESET_HEADERS}
    headers[H_REPLAYED_AT] = now_iso()
    headers[H_REPLAY_COUNT] = (_int(headers.get(H_REPLAY_COUNT)) or 0) + 1
    return aio_pika.Message(
        body=incoming.body,
        headers=headers,
        message_id=incoming.message_id,
        correlation_id=incoming.correlation_id,
        type=incoming.type,
        timestamp=incoming.timestamp,
        content_type=incoming.content_type or "application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


# ---- the operations -----------------------------------------------------------------------------------


class _DeadReader:
    """Fetches every message of a `.dead` queue, holding each unacked until acked or requeued."""

    def __init__(self, broker: Broker, queue: str) -> None:
        self.broker = broker
        self.dead_name = f"{queue}.dead"
        self._channel: AbstractChannel | None = None
        self.held: list[AbstractIncomingMessage] = []

    async def __aenter__(self) -> _DeadReader:
        self._channel = await self.broker.open_channel(publisher_confirms=False)
        return self

    async def fetch(self, limit: int | None = None) -> list[AbstractIncomingMessage]:
        """Fetch and hold every ready message (up to `limit`), in queue order."""
        assert self._channel is not None
        try:
            queue = await self._channel.declare_queue(self.dead_name, passive=True, timeout=_GET_TIMEOUT_S)
        except ChannelClosed as exc:
            raise DeadQueueMissing(f"queue {self.dead_name!r} does not exist on this vhost") from exc
        # Not bounded by the declare-ok message count: quorum queues report it with a lag of seconds.
        # Held messages are not delivered again, so this ends when nothing is ready.
        fetched: list[AbstractIncomingMessage] = []
        while limit is None or len(fetched) < limit:
            incoming = await queue.get(no_ack=False, fail=False, timeout=_GET_TIMEOUT_S)
            if incoming is None:
                break
            self.held.append(incoming)
            fetched.append(incoming)
        return fetched

    async def ack(self, incoming: AbstractIncomingMessage) -> None:
        """Remove a message from `.dead` for good (only after its copy was confirmed elsewhere)."""
        await incoming.ack()
        self.held.remove(incoming)

    async def __aexit__(self, *exc: object) -> None:
        # Requeue in fetch order; if the channel is already gone the broker has requeued them itself.
        try:
            for incoming in self.held:
                await incoming.nack(requeue=True)
        except Exception:  # noqa: S110 - the channel closing below requeues whatever is still unacked
            pass
        finally:
            self.held = []
            if self._channel is not None and not self._channel.is_closed:
                await self._channel.close()


async def list_dead(broker: Broker, queue: str = "activation", *, limit: int | None = None) -> list[DeadMessage]:
    """What waits in `<queue>.dead`, oldest first; everything stays there."""
    async with _DeadReader(broker, queue) as reader:
        return [describe(incoming) for incoming in await reader.fetch(limit)]


async def move_dead(
    broker: Broker, queue: str = "activation", *, select: Select, dry_run: bool = True, limit: int | None = None
) -> MoveReport:
    """Republish the selected messages of `<queue>.dead` (at most `limit`) to their original routing key."""
    report = MoveReport(dry_run=dry_run)
    moved_ids: set[str] = set()
    broker_lost = False
    async with _DeadReader(broker, queue) as reader:
        for incoming in await reader.fetch():
            dead = describe(incoming)
            full = limit is not None and len(report.moved) >= limit
            # A second copy of an id moved in this run is a duplicate: replaying it twice helps nobody.
            duplicate = dead.message_id is not None and dead.message_id in moved_ids
            if broker_lost or full or duplicate or not select(dead):
                report.kept.append(dead)
                continue
            if dead.routing_key is None:
                report.failed.append((dead, "no routing key known"))
                continue
            if not dry_run:
                try:
                    await broker.publish_raw(replay_copy(incoming), routing_key=dead.routing_key)
                except PublishError as exc:
                    report.failed.append((dead, str(exc)))
                    # Unroutable: try the others; connection gone: keep the rest as they are.
                    broker_lost = not broker.is_connected
                    continue
                await reader.ack(incoming)
            if dead.message_id is not None:
                moved_ids.add(dead.message_id)
            report.moved.append(dead)
    return report


# ---- the command line ---------------------------------------------------------------------------------

app = typer.Typer(help="Dead letters: list what failed for good, move it back to its work queue.", add_completion=False)


@app.callback()
def _setup() -> None:
    # Plain warnings on stderr (e.g. while RabbitMQ is being retried); stdout stays for the listing.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def format_table(items: Sequence[DeadMessage]) -> str:
    """A plain-text table, one line per message."""
    headers = ("MESSAGE ID", "TYPE", "SALON", "ATTEMPTS", "AGE", "REPLAYS", "REASON")
    rows = [
        (
            d.message_id or "?",
            d.type or "?",
            "" if d.salon_id is None else str(d.salon_id),
            "?" if d.attempts is None else str(d.attempts),
            _age(d.age_s()),
            str(d.replay_count),
            d.reason.replace("\n", " ")[:160],
        )
        for d in items
    ]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


class BrokerUnreachable(Exception):
    """RabbitMQ could not be reached (the message names host and vhost, never the credentials)."""


async def _with_broker(work: Callable[[Broker], Awaitable[T]]) -> T:
    url = Settings().RABBITMQ_URL
    broker = Broker(url, name="replay")
    try:
        await broker.connect(attempts=3)
    except (TimeoutError, AMQPError, aiormq.exceptions.AMQPError, OSError) as exc:
        where = URL(url)
        raise BrokerUnreachable(f"RabbitMQ at {where.host}:{where.port}{where.path} unreachable: {exc!r}") from exc
    try:
        return await work(broker)
    finally:
        await broker.close()


def _fail(text: str, code: int = 1) -> typer.Exit:
    typer.echo(text, err=True)
    return typer.Exit(code)


@app.command("list")
def list_command(
    queue: str = typer.Argument("activation", help="work queue whose .dead to read"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="read at most N messages"),
) -> None:
    """List what waits in <queue>.dead (nothing is removed)."""
    try:
        items: list[DeadMessage] = asyncio.run(_with_broker(lambda b: list_dead(b, queue, limit=limit)))
    except (DeadQueueMissing, BrokerUnreachable) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps([d.as_json() for d in items], ensure_ascii=False, indent=2))
        return
    if not items:
        typer.echo(f"{queue}.dead is empty")
        return
    typer.echo(format_table(items))
    typer.echo(f"\n{len(items)} message(s) in {queue}.dead")


@app.command("move")
def move_command(
    queue: str = typer.Argument("activation", help="work queue whose .dead to replay"),
    salon: list[int] = typer.Option([], "--salon", help="only this salon (repeatable)"),
    type_: list[str] = typer.Option([], "--type", help="only this routing key / type (repeatable)"),
    everything: bool = typer.Option(False, "--all", help="every message"),
    dry_run: bool = typer.Option(True, "--dry-run/--no-dry-run", help="print what would move (default)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="move at most N messages"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Move selected messages of <queue>.dead back to their work queue (dry run unless --no-dry-run)."""
    try:
        select = selector(salons=salon, types=type_, everything=everything)
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc
    try:
        report: MoveReport = asyncio.run(
            _with_broker(lambda b: move_dead(b, queue, select=select, dry_run=dry_run, limit=limit))
        )
    except (DeadQueueMissing, BrokerUnreachable) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "dry_run": report.dry_run,
                    "moved": [d.as_json() for d in report.moved],
                    "kept": [d.as_json() for d in report.kept],
                    "failed": [{**d.as_json(), "error": e} for d, e in report.failed],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        if report.moved:
            typer.echo(("Would move:" if dry_run else "Moved:") + "\n" + format_table(report.moved) + "\n")
        for dead, error in report.failed:
            typer.echo(f"FAILED {dead.message_id}: {error}", err=True)
        typer.echo(report.summary() + (" (dry run: add --no-dry-run to move)" if dry_run and report.moved else ""))
    if report.failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
