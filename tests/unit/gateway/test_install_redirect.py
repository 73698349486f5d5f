"""`GET /auth/yclients/redirect`: salon-id forms, signatures, the token in the 302, and the outages."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import quote, urlencode

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.bus.topology import REGISTRATION
from shared.config import Settings
from shared.db.models import OutboxMessage
from shared.messages import Message, RegistrationRequested, RegistrationRequestedData, decode
from shared.tokens import encode_user_data, read_onboarding_token, sign_user_data
from tests.unit.gateway.conftest import MakeSpy
from tests.unit.gateway.gateway_support import (
    new_salon_id,
    running_gateway,
    take_from_queue,
    token_from_location,
    with_broker_down,
    with_database_down,
)

REDIRECT = "/auth/yclients/redirect"
USER = {"id": 555001, "name": "Анна Смирнова", "phone": "79006464263", "email": "anna@salon.example"}


def signed_user(
    settings: Settings, user: dict[str, object] = USER, *, urlsafe: bool = False, padding: bool = True
) -> dict[str, str]:
    """`user_data` and `user_data_sign` as YClients sends them."""
    raw = json.dumps(user, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return {
        "user_data": encode_user_data(raw, urlsafe=urlsafe, padding=padding),
        "user_data_sign": sign_user_data(raw, settings.YCLIENTS_PARTNER_TOKEN.get_secret_value()),
    }


def for_salons(*salon_ids: int) -> Callable[[Message], bool]:
    """A matcher for the RegistrationRequested of exactly these salons."""

    def match(msg: Message) -> bool:
        return isinstance(msg, RegistrationRequested) and msg.data.salon_ids == list(salon_ids)

    return match


async def redirect(client: httpx.AsyncClient, pairs: list[tuple[str, str]]) -> httpx.Response:
    """Call the redirect with a query string built exactly from `pairs` (brackets unescaped, as YClients does)."""
    return await client.get(REDIRECT + "?" + urlencode(pairs, safe="[]", quote_via=quote))


@pytest.mark.parametrize(
    "form",
    ["salon_id", "salon_ids[]", "salon_ids[N]"],
)
async def test_each_salon_id_form_publishes_and_redirects_with_a_token_for_those_salons(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings, form: str
) -> None:
    first, second = new_salon_id(), new_salon_id()
    if form == "salon_id":
        ids, pairs = [first], [("salon_id", str(first))]
    elif form == "salon_ids[]":
        ids, pairs = [first, second], [("salon_ids[]", str(first)), ("salon_ids[]", str(second))]
    else:
        ids, pairs = [first, second], [("salon_ids[0]", str(first)), ("salon_ids[1]", str(second))]

    response = await redirect(client, pairs + list(signed_user(settings).items()))

    assert response.status_code == 302, response.text
    claims = read_onboarding_token(token_from_location(response.headers["location"]), secret=settings.JWT_SECRET)
    assert claims.salon_ids == ids
    assert claims.user_id == "555001"
    msg = await take_from_queue(channel, REGISTRATION.name, for_salons(*ids))
    assert isinstance(msg, RegistrationRequested)
    assert msg.salon_id == first
    assert msg.data.user is not None and msg.data.user.name == "Анна Смирнова"
    assert msg.data.user.phone == "79006464263"


async def test_url_safe_base64_without_padding_is_accepted(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings
) -> None:
    salon_id = new_salon_id()
    # Find a user whose base64 has '-' or '_' in it, so the URL-safe alphabet really matters.
    user = dict(USER)
    for n in range(200):
        user["name"] = "Анна Смирнова" + "?" * n
        fields = signed_user(settings, user, urlsafe=True, padding=False)
        if set(fields["user_data"]) & set("-_"):
            break
    assert set(fields["user_data"]) & set("-_")

    response = await redirect(client, [("salon_id", str(salon_id)), *fields.items()])

    assert response.status_code == 302, response.text
    msg = await take_from_queue(channel, REGISTRATION.name, for_salons(salon_id))
    assert isinstance(msg, RegistrationRequested) and msg.data.user is not None
    assert msg.data.user.name == user["name"]


async def test_without_user_data_the_redirect_needs_no_signature(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings
) -> None:
    salon_id = new_salon_id()
    response = await redirect(client, [("salon_id", str(salon_id))])
    assert response.status_code == 302
    msg = await take_from_queue(channel, REGISTRATION.name, for_salons(salon_id))
    assert isinstance(msg, RegistrationRequested) and msg.data.user is None


@pytest.mark.parametrize("case", ["forged", "missing", "other_key", "garbage_data"])
async def test_a_bad_signature_is_refused_with_a_page_and_nothing_is_published(
    client: httpx.AsyncClient, broker: Broker, spy: MakeSpy, settings: Settings, case: str
) -> None:
    watcher = await spy(RegistrationRequested.ROUTING_KEY)
    salon_id = new_salon_id()
    fields = signed_user(settings)
    if case == "forged":
        fields["user_data_sign"] = fields["user_data_sign"][:-1] + ("0" if fields["user_data_sign"][-1] != "0" else "1")
    elif case == "missing":
        del fields["user_data_sign"]
    elif case == "other_key":
        raw = json.dumps(USER, ensure_ascii=False, separators=(",", ":")).encode()
        fields["user_data_sign"] = sign_user_data(raw, "another-partner-token-123456")
    else:
        fields["user_data"] = "%%%not-base64%%%"

    response = await redirect(client, [("salon_id", str(salon_id)), *fields.items()])

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "Ссылка не прошла проверку" in response.text
    assert "Подключить" in response.text and settings.YCLIENTS_UI_URL in response.text
    marker = RegistrationRequested(salon_id=1, data=RegistrationRequestedData(salon_ids=[1]))
    await broker.publish(marker)
    before_marker = await watcher.drain_until(marker)
    assert not [m for m in before_marker if m.salon_id == salon_id]


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("salon_id", "")],
        [("salon_id", "abc")],
        [("salon_id", "-5")],
        [("salon_id", "0")],
        [("salon_ids[]", "12"), ("salon_ids[]", "x")],
        [("salon_id", "9" * 30)],
    ],
    ids=["none", "empty", "letters", "negative", "zero", "one_bad_of_two", "huge"],
)
async def test_a_missing_or_invalid_salon_id_gets_a_400_page(
    client: httpx.AsyncClient, pairs: list[tuple[str, str]]
) -> None:
    response = await redirect(client, pairs)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "Не удалось определить салон" in response.text
    assert "нажмите «Подключить» ещё раз" in response.text


async def test_neither_the_token_nor_the_signature_is_logged(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    salon_id = new_salon_id()
    fields = signed_user(settings)
    with caplog.at_level(logging.DEBUG):
        response = await redirect(client, [("salon_id", str(salon_id)), *fields.items()])
        forged = await redirect(
            client, [("salon_id", str(salon_id)), ("user_data", fields["user_data"]), ("user_data_sign", "0" * 64)]
        )
    assert response.status_code == 302 and forged.status_code == 403
    token = token_from_location(response.headers["location"])
    # httpx here is the test's own client (the service runs it at WARNING); everything else is the gateway side.
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert "install redirect accepted" in logged
    for secret in (token, fields["user_data_sign"], fields["user_data"], "0" * 64):
        assert secret not in logged
    await take_from_queue(channel, REGISTRATION.name, for_salons(salon_id))


async def test_with_the_broker_down_the_redirect_still_answers_and_the_message_waits_in_the_outbox(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], channel: AbstractChannel
) -> None:
    salon_id = new_salon_id()
    async with running_gateway(with_broker_down(settings), wait_ready=False) as (app, client):
        assert not app.state.broker.is_connected
        response = await redirect(client, [("salon_id", str(salon_id)), *signed_user(settings).items()])
        ready = await client.get("/readyz")

    assert response.status_code == 302, response.text
    assert read_onboarding_token(token_from_location(response.headers["location"]), secret=settings.JWT_SECRET)
    assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False
    async with sessionmaker() as session:
        rows = (await session.execute(select(OutboxMessage).where(OutboxMessage.producer == "gateway"))).scalars()
        stored = [decode(r.body) for r in rows if r.routing_key == RegistrationRequested.ROUTING_KEY]
    if not [m for m in stored if m.salon_id == salon_id and isinstance(m, RegistrationRequested)]:
        # A row whose publish failed is due at once: a relay of another (connected) gateway of this test session
        # may already have published it on the NOTIFY. Then it is in the work queue: nothing was lost.
        relayed = await take_from_queue(channel, REGISTRATION.name, for_salons(salon_id), timeout=10)
        assert isinstance(relayed, RegistrationRequested)


async def test_the_outbox_relay_publishes_what_was_stored_while_the_broker_was_down(
    settings: Settings, channel: AbstractChannel, gateway: object
) -> None:
    # The previous test left a message in the outbox; the module's (connected) gateway relays it after its grace.
    salon_id = new_salon_id()
    async with running_gateway(with_broker_down(settings), wait_ready=False) as (_, client):
        response = await redirect(client, [("salon_id", str(salon_id))])
    assert response.status_code == 302
    msg = await take_from_queue(channel, REGISTRATION.name, for_salons(salon_id), timeout=20)
    assert msg.salon_id == salon_id


async def test_with_broker_and_database_down_the_admin_gets_a_503_page_with_a_retry_link(settings: Settings) -> None:
    broken = with_database_down(with_broker_down(settings))
    salon_id = new_salon_id()
    async with running_gateway(broken, wait_ready=False) as (_, client):
        response = await redirect(client, [("salon_id", str(salon_id))])
        healthz = await client.get("/healthz")
        ready = await client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "попробуйте ещё раз через минуту" in response.text.lower()
    assert f'href="{REDIRECT}?salon_id={salon_id}"' in response.text
    assert healthz.status_code == 200
    assert ready.status_code == 503 and ready.json()["checks"] == {
        "database": False,
        "broker": False,
        "live_hub": False,
    }
