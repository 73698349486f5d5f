"""The table and docs/chaos.md, the tap's reading of envelopes, the load's plans, the world's URLs."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime

import pytest

from chaos.invariants import Evaluation
from chaos.load import Mix, make_plans
from chaos.model import Row
from chaos.proxy import NotLoopback
from chaos.report import Machine, markdown_table, render_doc, text_table
from chaos.run import ScenarioResult
from chaos.tap import published_fact
from chaos.world import upstream_port, via_proxy
from shared.messages import IntegrationStatusChanged, RequestLogout, encode

OK = Row("R1", 120, 118, 119, 0, 0, 0, ok=True)
BAD = Row("R5", 60, 60, 58, 1, 1, 3, ok=False)
MACHINE = Machine("Test CPU", 2, 24.0, "Linux 6.1", "3.11.2", "3.10.8", "PostgreSQL 15.20")


def test_text_table_aligns_every_column_under_its_header() -> None:
    lines = text_table([OK, BAD]).splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:2] == ["scenario", "sent"]
    assert len({len(line) for line in lines}) == 1
    assert lines[2].split()[-1] == "ok" and lines[3].split()[-1] == "FAIL"
    assert lines[3].split()[1:7] == ["60", "60", "58", "1", "1", "3"]


def test_markdown_table_has_one_row_per_scenario() -> None:
    table = markdown_table([OK, BAD]).splitlines()
    assert table[0].startswith("| scenario | sent | acknowledged | applied | duplicate effects | lost |")
    assert table[2] == "| R1 | 120 | 118 | 119 | 0 | 0 | 0 | ok |"
    assert table[3] == "| R5 | 60 | 60 | 58 | 1 | 1 | 3 | FAIL |"


def test_the_document_names_machine_date_command_and_notes() -> None:
    results = [
        ScenarioResult("R1", "SIGKILL", OK, Evaluation(), ["killed 12 times"], 61.0),
        ScenarioResult("R5", "YClients faults", BAD, Evaluation(), ["LOST: 1 — install salon 5"], 80.0),
    ]
    doc = render_doc(
        results,
        machine_info=MACHINE,
        started=datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
        seconds=300,
        command="make chaos",
        variants=["Broker outage (R2): TCP proxy"],
    )
    assert "Test CPU, 2 cores, 24 GB RAM" in doc
    assert "2026-11-26 08:00" in doc
    assert "`make chaos`" in doc
    assert "| R5 | 60 | 60 | 58 | 1 | 1 | 3 | FAIL |" in doc
    assert "### R1 — SIGKILL (61 s)" in doc and "- killed 12 times" in doc
    assert "FAILURES" in doc
    assert "--real-broker-stop" in doc


def test_the_tap_reads_salon_status_and_correlation_from_an_envelope() -> None:
    change = IntegrationStatusChanged(
        salon_id=77, correlation_id="corr", data={"salon_id": 77, "status": "frozen", "previous": "active"}
    )
    fact = published_fact(encode(change))
    assert fact is not None
    assert (fact.message_id, fact.type, fact.salon_id, fact.correlation_id, fact.status) == (
        str(change.id),
        "integration.status_changed",
        77,
        "corr",
        "frozen",
    )
    logout = published_fact(encode(RequestLogout(data={"session_id": "company_88", "reason": "uninstall"})))
    assert logout is not None and logout.salon_id == 88


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", json.dumps({"type": "x"}).encode(), b""])
def test_the_tap_ignores_what_is_not_an_envelope(body: bytes) -> None:
    assert published_fact(body) is None


def test_the_tap_takes_the_amqp_message_id_when_the_body_has_none() -> None:
    mid = str(uuid.uuid4())
    fact = published_fact(json.dumps({"type": "registration.requested", "salon_id": 5}).encode(), mid)
    assert fact is not None and fact.message_id == mid


def test_plans_follow_the_mix() -> None:
    salons = list(range(1, 401))
    only = make_plans(salons, Mix(install_only=1.0), random.Random(1))
    assert all(p.install_only for p in only)
    quiet = make_plans(salons, Mix(install_only=0.0, webhook=0.0, manual_activate=0.0), random.Random(1))
    assert not any(p.install_only or p.webhook or p.manual_activate for p in quiet)
    mixed = make_plans(salons, Mix(), random.Random(1))
    assert 40 < sum(p.install_only for p in mixed) < 120
    assert {p.webhook for p in mixed if p.webhook} == {"freeze", "uninstall", "payment"}
    assert all(p.deliveries == 1 for p in mixed if p.webhook is None)
    assert any(p.deliveries == 2 for p in mixed)
    assert make_plans(salons, Mix(), random.Random(1)) == mixed  # the seed decides


def test_services_reach_broker_and_database_through_the_proxy_port() -> None:
    assert via_proxy("amqp://guest:guest@127.0.0.1:5672/mp_x", 40001) == "amqp://guest:guest@127.0.0.1:40001/mp_x"
    assert (
        via_proxy("postgresql+asyncpg://postgres@127.0.0.1:5432/mp_x", 40002)
        == "postgresql+asyncpg://postgres@127.0.0.1:40002/mp_x"
    )
    assert upstream_port("amqp://guest:guest@localhost/mp_x", 5672) == 5672
    assert upstream_port("postgresql+asyncpg://postgres@127.0.0.1:5433/db", 5432) == 5433


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@rabbit.example:5672/v", "postgresql+asyncpg://postgres@10.1.2.3:5432/db"]
)
def test_a_world_never_targets_another_host(url: str) -> None:
    with pytest.raises(NotLoopback):
        upstream_port(url, 1)
    with pytest.raises(NotLoopback):
        via_proxy(url, 1)
