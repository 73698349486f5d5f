"""The onboarding page's JSON API: pairing requests, the state, the seed-compatible status, limits and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.phone import InvalidPhone, normalize_phone
from shared.bus.topology import WHATSAPP
from shared.config import Settings
from shared.db.models import ActivationAttempt
from shared.messages import Message, RequestPairing
from shared.tokens import issue_onboarding_token
from tests.unit.gateway.gateway_support import new_salon_id, put_company, put_session, take_from_queue


def bearer(settings: Settings, *salon_ids: int) -> dict[str, str]:
    """The Authorization header the page sends."""
    return {"Authorization": "Bearer " + issue_onboarding_token(list(salon_ids), secret=settings.JWT_SECRET)}


def pairing_for(salon_id: int) -> Callable[[Message], bool]:
    def match(msg: Message) -> bool:
        return isinstance(msg, RequestPairing) and msg.data.session_id == f"company_{salon_id}"

    return match


# ---- pairing requests ---------------------------------------------------------------------------------


async def test_qr_request_publishes_a_pairing_command_for_the_first_salon(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings
) -> None:
    first, second = new_salon_id(), new_salon_id()
    response = await client.post("/marketplace/api/qr", headers=bearer(settings, first, second))

    assert response.status_code == 202
    assert response.json() == {
        "session_id": f"company_{first}",
        "salon_id": first,
        "status": "pairing_requested",
        "mode": "qr",
    }
    msg = await take_from_queue(channel, WHATSAPP.name, pairing_for(first))
    assert isinstance(msg, RequestPairing)
    assert msg.salon_id == first and msg.data.mode == "qr" and msg.data.phone is None


async def test_qr_request_for_another_salon_of_the_token_and_token_in_body(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings
) -> None:
    first, second = new_salon_id(), new_salon_id()
    token = issue_onboarding_token([first, second], secret=settings.JWT_SECRET)
    response = await client.post("/marketplace/api/qr", json={"salon_id": second, "token": token})

    assert response.status_code == 202 and response.json()["session_id"] == f"company_{second}"
    await take_from_queue(channel, WHATSAPP.name, pairing_for(second))


async def test_a_token_may_act_only_on_its_own_salons(client: httpx.AsyncClient, settings: Settings) -> None:
    mine, other = new_salon_id(), new_salon_id()
    qr = await client.post("/marketplace/api/qr", json={"salon_id": other}, headers=bearer(settings, mine))
    code = await client.post(
        "/marketplace/api/pairing-code",
        json={"salon_id": other, "phone": "79001234567"},
        headers=bearer(settings, mine),
    )
    assert qr.status_code == 403 and qr.json()["error"] == "forbidden_salon"
    assert code.status_code == 403


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "token_missing"),
        ({"Authorization": "Bearer nonsense"}, "token_invalid"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "token_missing"),
    ],
)
async def test_calls_without_a_valid_token_get_401_json(
    client: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    for method, path in (("POST", "/marketplace/api/qr"), ("GET", "/marketplace/api/state")):
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == code
        assert "YClients" in response.json()["detail"]


async def test_an_expired_token_says_so(client: httpx.AsyncClient, settings: Settings) -> None:
    token = issue_onboarding_token(
        [new_salon_id()], secret=settings.JWT_SECRET, now=datetime.now(UTC) - timedelta(hours=3)
    )
    response = await client.get("/marketplace/api/state", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and response.json()["error"] == "token_expired"


async def test_pairing_code_request_carries_the_normalised_phone(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings
) -> None:
    salon_id = new_salon_id()
    response = await client.post(
        "/marketplace/api/pairing-code", json={"phone": "+7 (900) 123-45-67"}, headers=bearer(settings, salon_id)
    )
    assert response.status_code == 202 and response.json()["mode"] == "phone"
    msg = await take_from_queue(channel, WHATSAPP.name, pairing_for(salon_id))
    assert isinstance(msg, RequestPairing)
    assert msg.data.mode == "phone" and msg.data.phone == "79001234567"


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("", "Укажите номер"),
        ("12345", "от 10 до 15 цифр"),
        ("+7 900 abc-45-67", "только цифры"),
        ("1234567890123456", "от 10 до 15 цифр"),
        ("+７９００１２３４５６７", "только цифры"),
    ],
)
async def test_an_invalid_phone_gets_422_with_a_russian_reason(
    client: httpx.AsyncClient, settings: Settings, phone: str, reason: str
) -> None:
    response = await client.post(
        "/marketplace/api/pairing-code", json={"phone": phone}, headers=bearer(settings, new_salon_id())
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_phone"
    assert reason in response.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+7 (900) 123-45-67", "79001234567"),
        ("79006464263", "79006464263"),
        ("8 900 123 45 67", "79001234567"),
        ("+49 151 23456789", "4915123456789"),
        ("84912345678", "84912345678"),
        ("+8 900 123 45 67", "89001234567"),
    ],
)
def test_phone_normalisation(raw: str, digits: str) -> None:
    assert normalize_phone(raw) == digits


def test_phone_too_long_input_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidPhone):
        normalize_phone("1" * 65)


# ---- bodies: size, JSON ----------------------------------------------------------------------------------


async def test_a_body_over_the_limit_gets_413(client: httpx.AsyncClient, settings: Settings) -> None:
    big = b'{"phone": "' + b"1" * (settings.MAX_BODY_BYTES + 10) + b'"}'
    declared = await client.post(
        "/marketplace/api/pairing-code",
        content=big,
        headers={**bearer(settings, 1), "Content-Type": "application/json"},
    )

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit must count the bytes as they arrive.
        for _ in range(settings.MAX_BODY_BYTES // 1024 + 2):
            yield b"1" * 1024

    streamed = await client.post(
        "/marketplace/api/pairing-code",
        content=chunks(),
        headers={**bearer(settings, 1), "Content-Type": "application/json"},
    )
    assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert streamed.status_code == 413 and streamed.json()["error"] == "payload_too_large"


async def test_a_body_just_under_the_limit_is_read(client: httpx.AsyncClient, settings: Settings) -> None:
    body = b'{"phone": "79001234567", "pad": "' + b"x" * (settings.MAX_BODY_BYTES - 100) + b'"}'
    assert len(body) <= settings.MAX_BODY_BYTES
    response = await client.post(
        "/marketplace/api/pairing-code",
        content=body,
        headers={**bearer(settings, new_salon_id()), "Content-Type": "application/json"},
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        (b"{not json", "application/json", "некорректный JSON"),
        (b"phone=79001234567", "application/x-www-form-urlencoded", "Ожидается JSON-объект"),
        (b"[1, 2]", "application/json", "Ожидается JSON-объект"),
        (b'{"phone": 79001234567}', "application/json", "phone"),
        (b"", "application/json", "Ожидается JSON-объект"),
    ],
)
async def test_bodies_that_are_not_the_expected_json_get_422_with_a_reason(
    client: httpx.AsyncClient, settings: Settings, content: bytes, content_type: str, message: str
) -> None:
    response = await client.post(
        "/marketplace/api/pairing-code",
        content=content,
        headers={**bearer(settings, new_salon_id()), "Content-Type": content_type},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert message in response.json()["message"]


async def test_qr_request_with_a_broken_json_body_is_422_not_500(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/marketplace/api/qr",
        content=b'{"salon_id": ',
        headers={**bearer(settings, new_salon_id()), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


# ---- state and status ------------------------------------------------------------------------------------


async def test_state_shows_every_salon_in_token_order(
    client: httpx.AsyncClient, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    a, b, c = new_salon_id(), new_salon_id(), new_salon_id()
    await put_company(sessionmaker, a, title="Первый", status="active", whatsapp_connected=True)
    await put_session(sessionmaker, a, state="connected", phone="79001112233")
    await put_company(sessionmaker, b, title="Второй", status="pending_whatsapp")
    expires = datetime.now(UTC) + timedelta(minutes=2)
    await put_session(
        sessionmaker, b, state="pairing", pairing_code="ABCDEFGH", pairing_code_expires_at=expires, attempt_id="x"
    )

    response = await client.get("/marketplace/api/state", headers=bearer(settings, a, b, c))

    assert response.status_code == 200
    body = response.json()
    assert [s["salon_id"] for s in body["salons"]] == [a, b, c]
    first, second, third = body["salons"]
    assert first["title"] == "Первый" and first["integration_status"] == "active"
    assert first["whatsapp"]["state"] == "connected" and first["whatsapp"]["phone"] == "79001112233"
    assert first["activation"] == {"status": "active", "error": None}
    assert second["whatsapp"]["qr"] is None
    assert second["whatsapp"]["pairing_code"]["code"] == "ABCDEFGH"
    assert second["whatsapp"]["pairing_code"]["display"] == "ABCD-EFGH"
    assert third == {
        "salon_id": c,
        "title": None,
        "integration_status": None,
        "registered": False,
        "whatsapp": {
            "session_id": f"company_{c}",
            "state": None,
            "phone": None,
            "qr": None,
            "pairing_code": None,
            "last_error": None,
            "retrying": False,
        },
        "activation": {"status": None, "error": None},
    }


async def test_a_failed_activation_is_explained_in_plain_russian(
    client: httpx.AsyncClient, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = new_salon_id()
    await put_company(
        sessionmaker,
        salon_id,
        title="Салон",
        status="activation_failed",
        last_error="YClientsAuthError: 401 Unauthorized {'meta': {'message': 'bad token'}}",
    )
    response = await client.get("/marketplace/api/state", headers=bearer(settings, salon_id))
    activation = response.json()["salons"][0]["activation"]
    assert activation["status"] == "failed"
    assert "ключ партнёра" in activation["error"] and "Unauthorized" not in activation["error"]


async def test_status_is_seed_compatible_and_404_for_unknown_sessions(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    connected, registered, unknown = new_salon_id(), new_salon_id(), new_salon_id()
    await put_company(sessionmaker, connected, title="С WhatsApp")
    await put_session(sessionmaker, connected, state="connected", phone="79001112233")
    await put_company(sessionmaker, registered, title="Без WhatsApp")

    ok = await client.get(f"/marketplace/api/status/company_{connected}")
    waiting = await client.get(f"/marketplace/api/status/company_{registered}")
    missing = await client.get(f"/marketplace/api/status/company_{unknown}")
    malformed = [
        await client.get(f"/marketplace/api/status/{bad}")
        for bad in ("company_", "company_abc", "salon_12", "company_" + "9" * 40, "company_0")
    ]

    assert ok.status_code == 200 and ok.json() == {"connected": True, "status": "connected"}
    assert waiting.json() == {"connected": False, "status": "not_started"}
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_session"
    assert [r.status_code for r in malformed] == [404] * 5


async def test_the_latest_activation_attempt_decides_the_explanation(
    client: httpx.AsyncClient, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = new_salon_id()
    await put_company(sessionmaker, salon_id, title="Салон", status="activation_failed")
    async with sessionmaker() as session:
        session.add_all(
            [
                ActivationAttempt(salon_id=salon_id, attempt=1, status_code=503, outcome="retry", error="busy"),
                ActivationAttempt(salon_id=salon_id, attempt=2, status_code=422, outcome="permanent", error="bad"),
            ]
        )
        await session.commit()
    response = await client.get("/marketplace/api/state", headers=bearer(settings, salon_id))
    assert "отклонил данные активации" in response.json()["salons"][0]["activation"]["error"]
