"""Jepsen-style checks: which operations took effect, which acknowledged ones were lost, what happened twice.

An operation is *applied* when its effect is visible (PostgreSQL, the sandbox, the exchange), whether or not
its sender saw an answer; it is *lost* when it was acknowledged and its effect is missing — unless the salon
has a message parked in a `.dead` queue, which is counted as dead-lettered (replayable), not lost.
A *duplicate effect* is one effect applied twice: a second registration row for one message, a second
successful partner callback (or `activation_completed`) for one salon, a second status change (or
logout/pause command) caused by the same lifecycle event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from chaos.model import OP_KINDS, DeadFact, Observed, Op, OpKind, Row
from sandbox.yclients import profiles
from services.activation.lifecycle import event_type_for
from shared.messages import (
    ActivationCompleted,
    IntegrationStatusChanged,
    RegistrationRequested,
    RequestLogout,
    RequestPause,
)

REGISTRATION_STARTED = "registration_started"
WHATSAPP_CONNECTED = "whatsapp_connected"
ACTIVATION_COMPLETED = "activation_completed"


@dataclass
class Tally:
    """Counts for one kind of operation."""

    sent: int = 0
    acknowledged: int = 0
    applied: int = 0
    lost: int = 0


@dataclass
class Evaluation:
    """The verdict on one scenario's history against what was observed."""

    tallies: dict[OpKind, Tally] = field(default_factory=lambda: {k: Tally() for k in OP_KINDS})
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    dead: list[DeadFact] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Acknowledged operations whose effect is not visible (yet): lost, if the drain is over."""
        return len(self.lost)

    def row(self, scenario: str, *, dead_lettered: int | None = None) -> Row:
        """The table row (`dead_lettered` overrides the count, e.g. the one seen before a replay)."""
        total = Tally()
        for tally in self.tallies.values():
            total.sent += tally.sent
            total.acknowledged += tally.acknowledged
            total.applied += tally.applied
        dead = len(self.dead) if dead_lettered is None else dead_lettered
        return Row(
            scenario=scenario,
            sent=total.sent,
            acknowledged=total.acknowledged,
            applied=total.applied,
            duplicates=len(self.duplicates),
            lost=len(self.lost),
            dead_lettered=dead,
            ok=not self.lost and not self.duplicates and not self.anomalies,
        )


def expected_title(salon_id: int) -> str:
    """The title the sandbox (YClients) gives the salon; enrichment must have stored it."""
    found = profiles.salon(salon_id)
    return found.title if found is not None else ""


class _Checker:
    def __init__(self, ops: list[Op], obs: Observed, *, whatsapp_worker: bool) -> None:
        self.ops = ops
        self.obs = obs
        self.whatsapp_worker = whatsapp_worker
        self.salons = {op.salon_id for op in ops}
        self.dead_salons = {d.salon_id for d in obs.dead if d.salon_id in self.salons}
        self.event_index = Counter((e.salon_id, e.event_type) for e in obs.events)
        self.webhook_rows = {(e.event_type, e.message_id) for e in obs.events if e.message_id}

    def has_event(self, salon_id: int, event_type: str) -> bool:
        return self.event_index[(salon_id, event_type)] > 0

    # -- effects -----------------------------------------------------------------------------------------
    def install_applied(self, op: Op) -> bool:
        company = self.obs.companies.get(op.salon_id)
        return (
            company is not None
            and self.has_event(op.salon_id, REGISTRATION_STARTED)
            and company.enriched
            and company.title == expected_title(op.salon_id)
        )

    def pair_applied(self, op: Op) -> bool:
        return op.salon_id in self.obs.sessions

    def activated(self, salon_id: int) -> bool:
        install = self.obs.installs.get(salon_id)
        return (
            self.has_event(salon_id, ACTIVATION_COMPLETED)
            and install is not None
            and install.status in ("active", "freezed")
            and self.key_consistent(salon_id)
        )

    def key_consistent(self, salon_id: int) -> bool:
        """The key YClients holds is the one we stored (a revoked key after uninstall is fine)."""
        company = self.obs.companies.get(salon_id)
        install = self.obs.installs.get(salon_id)
        if company is None or install is None or company.status == "uninstalled":
            return True
        return company.api_key_hash == install.api_key_hash

    def scan_applied(self, op: Op) -> bool:
        return self.has_event(op.salon_id, WHATSAPP_CONNECTED) and self.activated(op.salon_id)

    def activate_applied(self, op: Op) -> bool:
        return self.activated(op.salon_id)

    def webhook_applied(self, op: Op) -> bool:
        assert op.event is not None
        if op.message_id is not None:
            recorded = (event_type_for(op.event), op.message_id) in self.webhook_rows
        else:
            recorded = self.has_event(op.salon_id, event_type_for(op.event))
        if not recorded:
            return False
        company = self.obs.companies.get(op.salon_id)
        session = self.obs.sessions.get(op.salon_id)
        if op.event == "uninstall":
            wiped = company is not None and company.status == "uninstalled" and company.api_key_hash is None
            logged_out = not self.whatsapp_worker or session is None or session.desired == "logged_out"
            return wiped and logged_out
        if op.event == "freeze":
            frozen = company is not None and company.status == "frozen"
            paused = not self.whatsapp_worker or session is None or session.desired == "paused"
            return frozen and paused
        return True

    def applied(self, op: Op) -> bool:
        effects: dict[OpKind, Callable[[Op], bool]] = {
            "install": self.install_applied,
            "pair": self.pair_applied,
            "scan": self.scan_applied,
            "activate": self.activate_applied,
            "webhook": self.webhook_applied,
        }
        return effects[op.kind](op)

    # -- duplicates --------------------------------------------------------------------------------------
    def duplicates(self) -> list[str]:
        found: list[str] = []
        for (event_type, message_id), count in Counter(
            (e.event_type, e.message_id) for e in self.obs.events if e.message_id and e.salon_id in self.salons
        ).items():
            if count > 1:
                found.append(f"{count} `{event_type}` rows for message {message_id}")
        for salon_id in sorted(self.salons):
            found.extend(self._salon_duplicates(salon_id))
        return found

    def _salon_duplicates(self, salon_id: int) -> list[str]:
        found: list[str] = []
        rows = self.event_index[(salon_id, REGISTRATION_STARTED)]
        messages = len(self.obs.published_of(salon_id, RegistrationRequested.ROUTING_KEY))
        if messages and rows > messages:
            found.append(f"salon {salon_id}: {rows} registration_started rows for {messages} registration message(s)")
        callbacks = sum(1 for c in self.obs.callbacks if c.salon_id == salon_id and c.status == 201)
        completed_rows = self.event_index[(salon_id, ACTIVATION_COMPLETED)]
        completed_msgs = len(self.obs.published_of(salon_id, ActivationCompleted.ROUTING_KEY))
        activations = max(callbacks, completed_rows, completed_msgs)
        if activations > 1:
            found.append(
                f"salon {salon_id} activated {activations} times (sandbox 201 callbacks {callbacks}, "
                f"activation_completed rows {completed_rows}, activation.completed messages {completed_msgs})"
            )
        for status, command in (("uninstalled", RequestLogout), ("frozen", RequestPause)):
            changes = len(self.obs.published_of(salon_id, IntegrationStatusChanged.ROUTING_KEY, status))
            commands = len(self.obs.published_of(salon_id, command.ROUTING_KEY))
            if max(changes, commands) > 1:
                found.append(
                    f"salon {salon_id} {status} {max(changes, commands)} times "
                    f"(status changes {changes}, {command.ROUTING_KEY} commands {commands})"
                )
        return found

    # -- end states --------------------------------------------------------------------------------------
    def anomalies(self) -> list[str]:
        found: list[str] = []
        if self.obs.outbox_left:
            found.append(f"{self.obs.outbox_left} message(s) still in the outbox after the drain")
        for salon_id in sorted(self.salons):
            if not self.key_consistent(salon_id):
                found.append(f"salon {salon_id}: the api_key YClients holds is not the one stored (hash mismatch)")
        hooks = {op.salon_id for op in self.ops if op.kind == "webhook"}
        for op in self.ops:
            if op.kind != "scan" or not op.acked or op.salon_id in hooks or op.salon_id in self.dead_salons:
                continue
            company = self.obs.companies.get(op.salon_id)
            if company is not None and company.status != "active" and self.activated(op.salon_id):
                found.append(f"salon {op.salon_id} activated but ended `{company.status}`, not `active`")
        return found


def evaluate(ops: list[Op], obs: Observed, *, whatsapp_worker: bool) -> Evaluation:
    """Tally the operations against the observed facts."""
    checker = _Checker(ops, obs, whatsapp_worker=whatsapp_worker)
    result = Evaluation()
    for op in ops:
        tally = result.tallies[op.kind]
        tally.sent += 1
        tally.acknowledged += op.acked
        applied = checker.applied(op)
        tally.applied += applied
        if op.acked and not applied and op.salon_id not in checker.dead_salons:
            tally.lost += 1
            result.lost.append(op.evidence())
    result.duplicates = checker.duplicates()
    result.dead = [d for d in obs.dead if d.salon_id in checker.salons]
    result.anomalies = checker.anomalies()
    return result
