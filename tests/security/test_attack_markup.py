"""SQL and HTML in every text field that reaches the gateway, and in the salon title coming back from YClients.

Authentic data (signed user_data, a genuine webhook) is carried and stored verbatim, as data: never executed as
SQL, never rendered as markup. Unauthenticated input with the same content is refused and changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select

from services.activation.lifecycle import apply_lifecycle_webhook
from services.registration.companies import upsert_company
from shared.bus.topology import ACTIVATION, REGISTRATION
from shared.config import Settings
from shared.db.models import Company, MarketplaceEvent
from shared.db.uow import UnitOfWork
from shared.messages import RegistrationRequested, YClientsDataChanged, YClientsWebhookReceived
from shared.yclients import InstallStatus
from tests.integration.gateway.sse_support import EventReader
from tests.security.conftest import NoEffect, Sessions, bearer, company_count, signed_user_data, token_for
from tests.unit.gateway.gateway_support import Spy, new_salon_id, put_company, take_from_queue

pytestmark = pytest.mark.integration

SCRIPT = "<script>alert(1)</script>"
SQL = "'); DROP TABLE companies; --"
ATTRIBUTE = '" onmouseover="alert(1)'
HOSTILE = f"{SCRIPT}{SQL}{ATTRIBUTE}"


class NoYClients:
    """The activation worker's YClients port; an unknown lifecycle event must not call it."""

    async def activate(
        self, salon_id: int, api_key: str, webhook_urls: Sequence[str], channels: Sequence[str] = ()
    ) -> None:
        raise AssertionError("no YClients call expected")

    async def get_install_status(self, salon_id: int) -> InstallStatus | None:
        raise AssertionError("no YClients call expected")


# ---- the salon title from YClients, shown by the page ------------------------------------------------


@pytest.fixture
async def hostile_salon(sessionmaker: Sessions) -> int:
    """A salon whose title (as YClients returned it) is a script tag."""
    salon_id = new_salon_id()
    await put_company(sessionmaker, salon_id, title=SCRIPT)
    return salon_id


async def test_the_page_escapes_a_script_in_the_salon_title(
    http: httpx.AsyncClient, settings: Settings, hostile_salon: int
) -> None:
    response = await http.get("/marketplace/onboarding", params={"token": token_for(settings, hostile_salon)})
    assert response.status_code == 200
    page = response.text
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The script-visible copy of the state is JSON inside <script type="application/json">: it cannot close it.
    state = re.search(r'<script type="application/json" id="initial-state">(.*?)</script>', page, re.S)
    assert state is not None
    assert "</" not in state.group(1)
    assert json.loads(state.group(1))["salons"][0]["title"] == SCRIPT
    # Even an escape mistake could not run inline script: the page allows scripts from itself only.
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


async def test_the_state_api_carries_the_title_as_json_data(
    http: httpx.AsyncClient, settings: Settings, hostile_salon: int
) -> None:
    response = await http.get("/marketplace/api/state", headers=bearer(token_for(settings, hostile_salon)))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["salons"][0]["title"] == SCRIPT


async def test_the_event_stream_carries_the_title_as_json_data(
    http: httpx.AsyncClient, settings: Settings, hostile_salon: int
) -> None:
    async with http.stream(
        "GET", "/marketplace/api/events", params={"token": token_for(settings, hostile_salon)}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-content-type-options"] == "nosniff"
        snapshot = await EventReader(response).next()
    assert snapshot.name == "snapshot"
    assert snapshot.data["salons"][0]["title"] == SCRIPT


async def test_the_page_script_inserts_text_never_markup() -> None:
    """The page's script puts every value in with textContent; it has no HTML sink to reach."""
    from services.gateway.pages import STATIC_DIR

    script = (STATIC_DIR / "onboarding.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


# ---- user_data: signed by YClients, carried and stored verbatim -------------------------------------------

HOSTILE_USER = {"id": f"1{SQL}", "name": HOSTILE, "email": f"{SCRIPT}@x.example", "phone": f"7900{SQL}"}


async def test_markup_and_sql_in_signed_user_data_are_stored_verbatim(
    http: httpx.AsyncClient, settings: Settings, channel: AbstractChannel, sessionmaker: Sessions
) -> None:
    salon_id = new_salon_id()
    companies_before = await company_count(sessionmaker)
    query = urlencode([("salon_id", str(salon_id)), *signed_user_data(settings, HOSTILE_USER).items()], quote_via=quote)
    response = await http.get("/auth/yclients/redirect?" + query)
    assert response.status_code == 302

    msg = await take_from_queue(
        channel, REGISTRATION.name, lambda m: isinstance(m, RegistrationRequested) and m.salon_id == salon_id
    )
    assert isinstance(msg, RegistrationRequested) and msg.data.user is not None
    user = msg.data.user
    assert (user.id, user.name, user.email, user.phone) == tuple(
        HOSTILE_USER[k] for k in ("id", "name", "email", "phone")
    )
    # What the registration worker does with it: parameters, never SQL text.
    async with sessionmaker() as session:
        await upsert_company(session, salon_id, user)
        await session.commit()
        row = (await session.execute(select(Company).where(Company.yclients_id == salon_id))).scalar_one()
    assert (row.marketplace_user_id, row.marketplace_user_name, row.marketplace_user_email) == (
        user.id,
        user.name,
        user.email,
    )
    assert await company_count(sessionmaker) == companies_before + 1


async def test_signed_user_data_too_long_or_with_nul_bytes_still_registers(
    http: httpx.AsyncClient, settings: Settings, channel: AbstractChannel, sessionmaker: Sessions
) -> None:
    """The columns hold 255/64 characters and PostgreSQL text no NUL: the worker would fail on every delivery."""
    salon_id = new_salon_id()
    user = {"id": "9" * 300, "name": "Анна\x00" + "я" * 300, "email": "a" * 300 + "@x.example", "phone": "7" * 100}
    query = urlencode([("salon_id", str(salon_id)), *signed_user_data(settings, user).items()], quote_via=quote)
    assert (await http.get("/auth/yclients/redirect?" + query)).status_code == 302

    msg = await take_from_queue(
        channel, REGISTRATION.name, lambda m: isinstance(m, RegistrationRequested) and m.salon_id == salon_id
    )
    assert isinstance(msg, RegistrationRequested) and msg.data.user is not None
    async with sessionmaker() as session:
        await upsert_company(session, salon_id, msg.data.user)
        await session.commit()
        row = (await session.execute(select(Company).where(Company.yclients_id == salon_id))).scalar_one()
    assert row.marketplace_user_name == "Анна" + "я" * 251
    assert row.marketplace_user_id == "9" * 255 and row.marketplace_user_phone == "7" * 64
    assert row.marketplace_user_email == "a" * 255


async def test_the_same_user_data_unsigned_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect
) -> None:
    params = signed_user_data(settings, HOSTILE_USER)
    query = urlencode([("salon_id", str(new_salon_id())), ("user_data", params["user_data"])], quote_via=quote)
    response = await http.get("/auth/yclients/redirect?" + query)
    assert response.status_code == 403
    await no_effect.assert_clean()


@pytest.mark.parametrize("value", [SCRIPT, SQL, HOSTILE])
async def test_error_pages_never_reflect_the_query(http: httpx.AsyncClient, value: str) -> None:
    for path, params in (
        ("/auth/yclients/redirect", {"salon_id": value}),
        ("/auth/yclients/redirect", {"salon_id": "1", "user_data": value, "user_data_sign": value}),
        ("/marketplace/onboarding", {"token": value}),
        ("/nowhere", {"q": value}),
    ):
        response = await http.get(path, params=params, headers={"Accept": "text/html"})
        assert 400 <= response.status_code < 500
        assert value not in response.text
        assert "<script>" not in response.text


# ---- webhooks: genuine ones carried verbatim, forged ones refused ----------------------------------------


def lifecycle(settings: Settings, salon_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "salon_id": salon_id,
        "application_id": settings.YCLIENTS_APP_ID,
        "partner_token": settings.YCLIENTS_PARTNER_TOKEN.get_secret_value(),
        **fields,
    }


async def test_markup_and_sql_in_a_genuine_lifecycle_webhook_are_stored_verbatim(
    http: httpx.AsyncClient, settings: Settings, channel: AbstractChannel, sessionmaker: Sessions
) -> None:
    salon_id = new_salon_id()
    event = f"{SCRIPT}{SQL}"[:64]
    body = lifecycle(settings, salon_id, event=event, note=HOSTILE, nested={"x": [HOSTILE]})
    response = await http.post("/webhook/yclients", json=body)
    assert response.status_code == 200

    msg = await take_from_queue(
        channel, ACTIVATION.name, lambda m: isinstance(m, YClientsWebhookReceived) and m.salon_id == salon_id
    )
    assert isinstance(msg, YClientsWebhookReceived)
    assert msg.data.event == event and msg.data.body["note"] == HOSTILE and msg.data.body["nested"] == {"x": [HOSTILE]}
    # What the activation worker does with it: an audit row holding the text as data.
    await apply_lifecycle_webhook(msg, uow=UnitOfWork(sessionmaker, producer="activation"), yclients=NoYClients())
    async with sessionmaker() as session:
        stored = (
            await session.execute(select(MarketplaceEvent).where(MarketplaceEvent.message_id == msg.id))
        ).scalar_one()
    assert stored.event_data is not None
    assert stored.event_data["event"] == event and stored.event_data["body"]["note"] == HOSTILE


async def test_nul_characters_in_a_genuine_webhook_cannot_break_the_worker(
    http: httpx.AsyncClient, settings: Settings, channel: AbstractChannel, sessionmaker: Sessions
) -> None:
    """PostgreSQL's jsonb cannot hold U+0000: the activation worker would fail on every delivery of this webhook."""
    salon_id = new_salon_id()
    body = lifecycle(settings, salon_id, event="pay\u0000ment", note="a\u0000b", **{"k\u0000ey": ["\u0000"]})
    response = await http.post("/webhook/yclients", json=body)
    assert response.status_code == 200

    msg = await take_from_queue(
        channel, ACTIVATION.name, lambda m: isinstance(m, YClientsWebhookReceived) and m.salon_id == salon_id
    )
    assert isinstance(msg, YClientsWebhookReceived)
    assert msg.data.event == "payment" and msg.data.body["note"] == "ab" and msg.data.body["key"] == [""]
    await apply_lifecycle_webhook(msg, uow=UnitOfWork(sessionmaker, producer="activation"), yclients=NoYClients())
    async with sessionmaker() as session:
        stored = (
            await session.execute(select(MarketplaceEvent).where(MarketplaceEvent.message_id == msg.id))
        ).scalar_one()
    assert stored.event_type == "webhook_payment"


async def test_the_same_lifecycle_webhook_forged_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect
) -> None:
    body = lifecycle(settings, new_salon_id(), event=f"{SCRIPT}{SQL}"[:64], note=HOSTILE)
    body["partner_token"] = SQL
    response = await http.post("/webhook/yclients", json=body)
    assert response.status_code == 403
    await no_effect.assert_clean()


async def test_markup_and_sql_in_a_data_webhook_travel_as_data(
    http: httpx.AsyncClient, channel_spy: Spy, sessionmaker: Sessions
) -> None:
    company_id = new_salon_id()
    companies_before = await company_count(sessionmaker)
    body = {
        "company_id": company_id,
        "resource": SCRIPT,
        "resource_id": SQL,
        "status": SQL[:64],
        "data": {"x": HOSTILE},
    }
    response = await http.post("/webhook/yclients/data", json=body)
    assert response.status_code == 200
    msg = await channel_spy.expect(lambda m: isinstance(m, YClientsDataChanged) and m.salon_id == company_id)
    assert isinstance(msg, YClientsDataChanged)
    assert (msg.data.resource, msg.data.resource_id, msg.data.payload["data"]) == (SCRIPT, SQL, {"x": HOSTILE})
    assert await company_count(sessionmaker) == companies_before


# ---- the phone number for pairing by code ----------------------------------------------------------------


@pytest.mark.parametrize("phone", [SQL, SCRIPT, HOSTILE, f"+7 900 123-45-67{SQL}", "+7 900 123-45-67<b>", "7" * 300])
async def test_markup_or_sql_in_the_pairing_phone_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, phone: str
) -> None:
    response = await http.post(
        "/marketplace/api/pairing-code",
        headers=bearer(token_for(settings, new_salon_id())),
        json={"phone": phone},
    )
    assert response.status_code == 422
    assert phone not in response.text, "the refusal must not echo the input back"
    await no_effect.assert_clean()
