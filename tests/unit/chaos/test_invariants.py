"""The Jepsen-style checks: applied, lost, duplicate effects and dead letters, on hand-made observations."""

from __future__ import annotations

import hashlib
import uuid

from chaos.invariants import evaluate, expected_title
from chaos.model import (
    CallbackFact,
    CompanyFacts,
    DeadFact,
    EventFact,
    History,
    InstallFacts,
    Observed,
    OpKind,
    PublishedFact,
    SessionFacts,
)

SALON = 9_100_001
KEY_HASH = hashlib.sha256(b"the-key").hexdigest()


def registered(obs: Observed, salon_id: int = SALON, *, status: str = "active", key: str | None = KEY_HASH) -> None:
    """A salon registered, enriched, linked and activated, with the sandbox holding its key."""
    obs.companies[salon_id] = CompanyFacts(salon_id, status, True, key, True, expected_title(salon_id))
    msg = str(uuid.uuid4())
    obs.events += [
        EventFact(salon_id, "registration_started", msg),
        EventFact(salon_id, "whatsapp_connected", str(uuid.uuid4())),
        EventFact(salon_id, "activation_completed", str(uuid.uuid4())),
    ]
    obs.published.append(PublishedFact(msg, "registration.requested", salon_id, None))
    obs.installs[salon_id] = InstallFacts(salon_id, "active", KEY_HASH)
    obs.callbacks.append(CallbackFact(salon_id, 201))
    obs.sessions[salon_id] = SessionFacts(salon_id, "connected", "running")


def journey(history: History, salon_id: int = SALON, *, acked: bool = True) -> None:
    kinds: tuple[OpKind, ...] = ("install", "pair", "scan")
    for kind in kinds:
        op = history.new(kind, salon_id)
        op.attempts = 1
        if acked:
            op.ack(200)


def test_a_journey_whose_effects_are_all_visible_is_applied_and_nothing_is_lost() -> None:
    history, obs = History(), Observed()
    journey(history)
    registered(obs)
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    row = result.row("R0")
    assert (row.sent, row.acknowledged, row.applied, row.lost, row.duplicates, row.dead_lettered) == (3, 3, 3, 0, 0, 0)
    assert row.ok


def test_an_acknowledged_install_without_a_company_is_lost_with_its_attempts() -> None:
    history, obs = History(), Observed()
    op = history.new("install", SALON)
    op.attempt("http://127.0.0.1:1", "302")
    op.ack(302)
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    assert result.row("R0").lost == 1
    assert not result.row("R0").ok
    assert f"salon {SALON}" in result.lost[0] and "http://127.0.0.1:1 → 302" in result.lost[0]


def test_an_install_registered_but_never_enriched_is_not_applied() -> None:
    history, obs = History(), Observed()
    history.new("install", SALON).ack(302)
    registered(obs)
    obs.companies[SALON] = CompanyFacts(SALON, "pending_whatsapp", False, None, False, f"Салон {SALON}")
    assert evaluate(history.ops, obs, whatsapp_worker=True).row("R0").lost == 1


def test_an_unacknowledged_operation_without_effect_is_not_lost() -> None:
    history, obs = History(), Observed()
    journey(history, acked=False)
    row = evaluate(history.ops, obs, whatsapp_worker=True).row("R0")
    assert (row.acknowledged, row.applied, row.lost) == (0, 0, 0)


def test_an_unacknowledged_operation_whose_effect_happened_counts_as_applied() -> None:
    history, obs = History(), Observed()
    journey(history, acked=False)
    registered(obs)
    row = evaluate(history.ops, obs, whatsapp_worker=True).row("R0")
    assert (row.acknowledged, row.applied, row.lost) == (0, 3, 0)


def test_a_salon_with_a_parked_message_is_dead_lettered_not_lost() -> None:
    history, obs = History(), Observed()
    journey(history)
    registered(obs)
    obs.events = [e for e in obs.events if e.event_type != "activation_completed"]
    obs.dead.append(DeadFact("activation", SALON, "whatsapp.connected", "m1", "permanent: HTTP 401"))
    obs.dead.append(DeadFact("activation", 1, "whatsapp.connected", "m2", "another run's salon"))
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    row = result.row("R0")
    assert (row.lost, row.dead_lettered) == (0, 1)
    assert result.row("R0", dead_lettered=3).dead_lettered == 3


def test_two_successful_callbacks_for_one_salon_are_a_duplicate_effect() -> None:
    history, obs = History(), Observed()
    journey(history)
    registered(obs)
    obs.callbacks += [CallbackFact(SALON, 500), CallbackFact(SALON, 403), CallbackFact(SALON, 201)]
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    assert result.row("R0").duplicates == 1
    assert "activated 2 times" in result.duplicates[0]


def test_relay_copies_of_one_message_are_not_duplicate_effects() -> None:
    history, obs = History(), Observed()
    journey(history)
    registered(obs)
    completed = str(uuid.uuid4())
    obs.published += [PublishedFact(completed, "activation.completed", SALON, "c")] * 3
    assert evaluate(history.ops, obs, whatsapp_worker=True).row("R0").duplicates == 0


def test_two_status_changes_for_one_uninstall_are_a_duplicate_effect() -> None:
    history, obs = History(), Observed()
    registered(obs, status="uninstalled", key=None)
    for _ in range(2):
        op = history.new("webhook", SALON, event="uninstall")
        op.ack(200, str(uuid.uuid4()))
        obs.events.append(EventFact(SALON, "webhook_uninstall", op.message_id))
    obs.sessions[SALON] = SessionFacts(SALON, "logged_out", "logged_out")
    obs.published += [
        PublishedFact(str(uuid.uuid4()), "integration.status_changed", SALON, "c1", "uninstalled"),
        PublishedFact(str(uuid.uuid4()), "integration.status_changed", SALON, "c2", "uninstalled"),
        PublishedFact(str(uuid.uuid4()), "whatsapp.logout_requested", SALON, "c1"),
    ]
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    assert result.tallies["webhook"].applied == 2
    assert result.row("R0").duplicates == 1
    assert "uninstalled 2 times" in result.duplicates[0]


def test_registration_rows_beyond_the_messages_published_are_duplicates() -> None:
    history, obs = History(), Observed()
    journey(history)
    registered(obs)
    obs.events.append(EventFact(SALON, "registration_started", str(uuid.uuid4())))
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    assert result.row("R0").duplicates == 1
    assert "2 registration_started rows for 1 registration message" in result.duplicates[0]


def test_an_uninstall_webhook_is_applied_only_with_the_key_wiped_and_the_session_logged_out() -> None:
    history, obs = History(), Observed()
    registered(obs, status="uninstalled", key=None)
    op = history.new("webhook", SALON, event="uninstall")
    op.ack(200, str(uuid.uuid4()))
    obs.events.append(EventFact(SALON, "webhook_uninstall", op.message_id))
    assert evaluate(history.ops, obs, whatsapp_worker=True).row("R0").lost == 1  # session still running
    obs.sessions[SALON] = SessionFacts(SALON, "logged_out", "logged_out")
    assert evaluate(history.ops, obs, whatsapp_worker=True).row("R0").lost == 0
    obs.companies[SALON] = CompanyFacts(SALON, "uninstalled", False, KEY_HASH, True, expected_title(SALON))
    assert evaluate(history.ops, obs, whatsapp_worker=True).row("R0").lost == 1  # key not revoked


def test_a_webhook_row_of_another_message_does_not_count() -> None:
    history, obs = History(), Observed()
    registered(obs, status="frozen")
    op = history.new("webhook", SALON, event="freeze")
    op.ack(200, str(uuid.uuid4()))
    obs.events.append(EventFact(SALON, "webhook_freeze", str(uuid.uuid4())))
    obs.sessions[SALON] = SessionFacts(SALON, "paused", "paused")
    assert evaluate(history.ops, obs, whatsapp_worker=True).row("R0").lost == 1


def test_a_key_yclients_holds_that_we_did_not_store_breaks_the_activation() -> None:
    history, obs = History(), Observed()
    journey(history)
    registered(obs, key=hashlib.sha256(b"another").hexdigest())
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    assert result.tallies["scan"].lost == 1
    assert any("hash mismatch" in a for a in result.anomalies)
    assert not result.row("R0").ok


def test_messages_left_in_the_outbox_break_the_row() -> None:
    history, obs = History(), Observed()
    journey(history)
    registered(obs)
    obs.outbox_left = 2
    result = evaluate(history.ops, obs, whatsapp_worker=True)
    assert result.row("R0").lost == 0
    assert not result.row("R0").ok
