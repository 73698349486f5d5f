"""Schemathesis against the gateway's own OpenAPI document, in-process on the session's broker and database.

Every generated request must get an answer the document declares (status, media type, body schema, headers),
never a 5xx; methods the document does not list get 405 with `Allow`. The run is schemathesis' own engine (the
phases its CLI runs: examples, coverage with boundary values and unexpected methods, fuzzing), seeded and
derandomized, so a failure reproduces. Two
passes: one with a valid onboarding token (and, for half of the lifecycle webhooks, the real partner token and
app id) so the generator reaches the code behind authentication; one without, so it fuzzes the token handling.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from aio_pika.abc import AbstractIncomingMessage
from fastapi import FastAPI
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.generation.modes import GenerationMode
from schemathesis.hooks import HookContext
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema

from services.gateway.app import create_app
from services.gateway.options import GatewayOptions
from shared.bus.broker import Broker
from shared.bus.topology import declare_all
from shared.config import Settings
from shared.tokens import issue_onboarding_token
from tests.security.conftest import WORK_QUEUES, Sessions
from tests.support.processes import OUTPUT
from tests.support.wait import wait_for
from tests.unit.gateway.gateway_support import new_salon_id, put_company

pytestmark = pytest.mark.integration

SEED = 20_261_126
# Per operation in the fuzzing phase; the examples and coverage phases add their own cases on top.
MAX_EXAMPLES = 80
ANONYMOUS_MAX_EXAMPLES = 30
SUMMARY = OUTPUT / "security" / "schemathesis.json"
TOKEN_OPERATIONS = r"^/marketplace/(api/(qr|pairing-code|state|events)|activate|onboarding)$"
MARKUP_TITLE = "<img src=x onerror=alert(1)>'; DROP TABLE companies; --"


def fuzz_config(max_examples: int) -> SchemathesisConfig:
    """Reproducible: a fixed seed, derandomized, no example database; every built-in check but one."""
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            # No state carried between runs (nor a `.schemathesis/` folder in the repository).
            "cache": {"enabled": False},
            "generation": {"max-examples": max_examples, "database": "none", "deterministic": True},
            # The event stream is cut after its first event (the snapshot); how it goes on is tested elsewhere.
            "max-stream-events": 1,
            "request-timeout": 15,
            "checks": {
                # "Every schema-valid request is accepted" cannot hold for this API: a salon id outside the
                # token, a wrong signature or a phone with letters are well-formed and still refused.
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )


@dataclass
class Run:
    """What one engine run sent and got back, and every check that failed."""

    name: str
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cases(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    def server_errors(self) -> dict[str, int]:
        return {op: n for op, c in self.statuses.items() if (n := sum(v for s, v in c.items() if s >= 500))}

    def summary(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "seconds": round(self.seconds, 1),
            "server_errors": self.server_errors(),
            "failed_checks": self.failures,
            "errors": self.errors,
            "operations": {op: dict(sorted(c.items())) for op, c in sorted(self.statuses.items())},
        }


RUNS: list[Run] = []


def execute(schema: BaseSchema, name: str) -> Run:
    """Run schemathesis' engine over `schema` and collect every response status and failed check."""
    run = Run(name)
    started = time.monotonic()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for case_id, interaction in event.recorder.interactions.items():
                label = event.recorder.cases[case_id].value.operation.label
                status = interaction.response.status_code if interaction.response is not None else 0
                run.statuses[label][status] += 1
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        info = check.failure_info
                        failure = info.failure if info is not None else None
                        case = event.recorder.cases[case_id].value
                        where = f"{case.method} {case.formatted_path}"
                        run.failures.append(f"{event.label}: {check.name} on {where}: {failure}")
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
    run.seconds = time.monotonic() - started
    RUNS.append(run)
    return run


@pytest.fixture(scope="module")
async def stand_in_workers(settings: Settings) -> AsyncIterator[None]:
    """A consumer on each work queue that drops what it gets, as if the workers ran.

    `/marketplace/health` then says 200 (it is 503 without workers), and what the fuzzer publishes (pairing,
    activation, webhooks) never reaches the workers of later tests.
    """
    broker = Broker(settings.RABBITMQ_URL, name="tests-fuzz-workers", publish_timeout_s=3)
    await asyncio.wait_for(broker.connect(attempts=3), timeout=30)
    channel = await broker.open_channel(publisher_confirms=False)
    await declare_all(channel, settings.RETRY_DELAYS_MS)

    async def drop(message: AbstractIncomingMessage) -> None:
        return None

    for work in WORK_QUEUES:
        queue = await channel.declare_queue(work.name, passive=True)
        await queue.consume(drop, no_ack=True)
    try:
        yield
    finally:
        await broker.close()


@pytest.fixture(scope="module")
async def fuzz_app(settings: Settings, stand_in_workers: None) -> AsyncIterator[FastAPI]:
    """The gateway app; schemathesis runs its lifespan (in its own event-loop thread) on first use."""
    app = create_app(settings, GatewayOptions())
    yield app
    await asyncio.to_thread(asgi.shutdown_lifespans)
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    runs = {run.name: run.summary() for run in RUNS}
    total = sum(run.cases for run in RUNS)
    SUMMARY.write_text(json.dumps({"seed": SEED, "cases": total, "runs": runs}, indent=2, ensure_ascii=False) + "\n")


async def load(app: FastAPI, max_examples: int) -> BaseSchema:
    """The app's document (this starts the app's lifespan), once the app is connected and consuming."""
    schema = await asyncio.to_thread(
        schemathesis.openapi.from_asgi, "/openapi.json", app, config=fuzz_config(max_examples)
    )

    asgi_app: Any = app  # schemathesis types ASGI apps with plain dicts, Starlette with MutableMappings

    def ready() -> bool:
        with asgi.get_client(asgi_app) as client:
            return bool(client.get("/readyz").status_code == 200)

    async def probe() -> bool:
        return await asyncio.to_thread(ready)

    await wait_for(probe, timeout=30, what="the fuzzed gateway ready")
    return schema


@pytest.fixture(scope="module")
async def fuzz_salon(sessionmaker: Sessions) -> int:
    """A registered salon whose title is markup and SQL (the answers must carry it as data)."""
    salon_id = new_salon_id()
    await put_company(sessionmaker, salon_id, title=MARKUP_TITLE)
    return salon_id


async def test_every_answer_with_a_valid_token_matches_the_document(
    fuzz_app: FastAPI, settings: Settings, fuzz_salon: int
) -> None:
    schema = await load(fuzz_app, MAX_EXAMPLES)
    token = issue_onboarding_token([fuzz_salon], secret=settings.JWT_SECRET)
    # The page's own `?token=` too, so the onboarding page renders (the markup title included).
    schema.config.update(headers={"Authorization": f"Bearer {token}"}, parameters={"query.token": token})
    partner_token = settings.YCLIENTS_PARTNER_TOKEN.get_secret_value()

    @schema.hook("map_case")
    def ours(context: HookContext, case: Case[Any]) -> Case[Any]:
        # The generator cannot guess the partner token; with it, half the webhooks reach the publish path.
        if (
            case.operation.path == "/webhook/yclients"
            and isinstance(case.body, dict)
            and case.meta is not None
            and case.meta.generation.mode == GenerationMode.POSITIVE
            and zlib.crc32(json.dumps(case.body, sort_keys=True, default=str).encode()) % 2 == 0
        ):
            case.body["partner_token"] = partner_token
            case.body["application_id"] = settings.YCLIENTS_APP_ID
        return case

    run = await asyncio.to_thread(execute, schema, "with token")
    assert run.errors == []
    assert run.server_errors() == {}
    assert run.failures == [], "\n".join(run.failures[:20])


async def test_every_answer_without_a_valid_token_matches_the_document(fuzz_app: FastAPI) -> None:
    schema = (await load(fuzz_app, ANONYMOUS_MAX_EXAMPLES)).include(path_regex=TOKEN_OPERATIONS)
    run = await asyncio.to_thread(execute, schema, "without token")
    assert run.errors == []
    assert run.server_errors() == {}
    assert run.failures == [], "\n".join(run.failures[:20])
    accepted = {op: c for op, c in run.statuses.items() if any(200 <= s < 300 for s in c)}
    assert accepted == {}, "no valid token, yet accepted"


def test_over_a_thousand_cases_and_no_server_error() -> None:
    assert len(RUNS) == 2
    assert sum(run.server_errors() != {} for run in RUNS) == 0
    total = sum(run.cases for run in RUNS)
    assert total >= 1_000, f"only {total} cases generated"
