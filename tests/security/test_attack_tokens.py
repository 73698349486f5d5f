"""Attacks with the onboarding token: `alg: none`, another key, expired, another salon, wrong audience or issuer.

Every API that acts on a salon refuses them with 401/403 and publishes nothing; the page shows a 401 page.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from aio_pika.abc import AbstractChannel

from shared.bus.topology import WHATSAPP
from shared.config import Settings
from shared.messages import RequestPairing
from shared.tokens import JWT_AUDIENCE, JWT_ISSUER, issue_onboarding_token
from tests.security.conftest import NoEffect, bearer, token_for
from tests.unit.gateway.gateway_support import new_salon_id, take_from_queue

pytestmark = [
    pytest.mark.integration,
    # The HS512 forgery reuses the 32-byte test secret on purpose.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

Call = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def claims(salon_id: int, **overrides: Any) -> dict[str, Any]:
    """Claims a genuine token for `salon_id` would carry."""
    now = int(datetime.now(UTC).timestamp())
    base: dict[str, Any] = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": str(salon_id),
        "salon_ids": [salon_id],
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return base


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    """A token with `alg: none` (or another unsigned alg spelling) and an empty signature."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}."


def forged_tokens(settings: Settings, salon_id: int) -> dict[str, str]:
    """Every way a token may be wrong, each for `salon_id` (the salon the request acts on)."""
    secret = settings.JWT_SECRET.get_secret_value()
    genuine = token_for(settings, salon_id)
    head, _payload, sig = genuine.split(".")
    past = datetime.now(UTC) - timedelta(hours=2)
    return {
        "alg-none": unsigned(claims(salon_id)),
        "alg-None": unsigned(claims(salon_id), alg="None"),
        "alg-none-with-genuine-signature": unsigned(claims(salon_id))[:-1] + sig,
        "another-key": jwt.encode(claims(salon_id), "another-secret-of-32-bytes-or-more!!", algorithm="HS256"),
        "hs512-same-key": jwt.encode(claims(salon_id), secret, algorithm="HS512"),
        "expired": issue_onboarding_token([salon_id], secret=settings.JWT_SECRET, ttl_s=3600, now=past),
        "wrong-audience": jwt.encode(claims(salon_id, aud="admin"), secret, algorithm="HS256"),
        "wrong-issuer": jwt.encode(claims(salon_id, iss="someone-else"), secret, algorithm="HS256"),
        "no-expiry": jwt.encode({k: v for k, v in claims(salon_id).items() if k != "exp"}, secret, algorithm="HS256"),
        "issued-in-the-future": jwt.encode(
            claims(salon_id, iat=int(datetime.now(UTC).timestamp()) + 3600), secret, algorithm="HS256"
        ),
        "payload-swapped": f"{head}.{b64url(json.dumps(claims(salon_id + 1)).encode())}.{sig}",
        "garbage": "not-a-token",
        "oversized": genuine + "A" * 5000,
    }


async def post_qr(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/marketplace/api/qr", headers=bearer(token))


async def post_qr_token_in_body(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/marketplace/api/qr", json={"token": token})


async def post_pairing_code(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/marketplace/api/pairing-code", headers=bearer(token), json={"phone": "+7 900 123-45-67"})


async def post_activate(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/marketplace/activate", json={"token": token})


async def get_state(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/marketplace/api/state", params={"token": token})


async def get_events(http: httpx.AsyncClient, token: str) -> httpx.Response:
    async with http.stream("GET", "/marketplace/api/events", params={"token": token}) as response:
        await response.aread()
        return response


CALLS: dict[str, Call] = {
    "qr": post_qr,
    "qr-token-in-body": post_qr_token_in_body,
    "pairing-code": post_pairing_code,
    "activate": post_activate,
    "state": get_state,
    "events": get_events,
}
KINDS = (
    "alg-none",
    "alg-None",
    "alg-none-with-genuine-signature",
    "another-key",
    "hs512-same-key",
    "expired",
    "wrong-audience",
    "wrong-issuer",
    "no-expiry",
    "issued-in-the-future",
    "payload-swapped",
    "garbage",
    "oversized",
)


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("kind", KINDS)
async def test_a_bad_token_is_refused_with_401(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, call: str, kind: str
) -> None:
    token = forged_tokens(settings, new_salon_id())[kind]
    response = await CALLS[call](http, token)
    if kind == "oversized" and call == "activate":
        # Longer than any token can be: the body field itself is refused before the token is read.
        assert response.status_code == 422
        await no_effect.assert_clean()
        return
    assert response.status_code == 401, response.text[:300]
    body = response.json()
    assert body["error"] == ("token_expired" if kind == "expired" else "token_invalid")
    assert "YClients" in body["detail"]
    assert response.headers["www-authenticate"] == "Bearer"
    await no_effect.assert_clean()


@pytest.mark.parametrize("kind", KINDS)
async def test_the_page_refuses_a_bad_token_with_a_page(http: httpx.AsyncClient, settings: Settings, kind: str) -> None:
    token = forged_tokens(settings, new_salon_id())[kind]
    response = await http.get("/marketplace/onboarding", params={"token": token})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "data-token" not in response.text, "the onboarding page itself must not render for a bad token"


async def test_a_missing_token_is_refused(http: httpx.AsyncClient, no_effect: NoEffect) -> None:
    responses = [
        await http.post("/marketplace/api/qr"),
        await http.post("/marketplace/api/qr", json={"salon_id": 1}),
        await http.post("/marketplace/api/pairing-code", json={"phone": "+7 900 123-45-67"}),
        await http.post("/marketplace/activate"),
        await http.post("/marketplace/activate", json={"token": ""}),
        await http.post("/marketplace/activate", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
        await http.get("/marketplace/api/state"),
        await http.get("/marketplace/api/state", params={"token": ""}),
        await http.get("/marketplace/api/events"),
    ]
    assert [r.status_code for r in responses] == [401] * len(responses)
    assert {r.json()["error"] for r in responses} == {"token_missing"}
    await no_effect.assert_clean()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/marketplace/api/qr", {}),
        ("/marketplace/api/pairing-code", {"phone": "+7 900 123-45-67"}),
        ("/marketplace/activate", {}),
    ],
)
async def test_a_token_for_salon_a_cannot_act_on_salon_b(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str, body: dict[str, Any]
) -> None:
    salon_a, salon_b = new_salon_id(), new_salon_id()
    response = await http.post(path, headers=bearer(token_for(settings, salon_a)), json={**body, "salon_id": salon_b})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden_salon"
    await no_effect.assert_clean()


async def test_a_token_for_salon_a_sees_only_salon_a(http: httpx.AsyncClient, settings: Settings) -> None:
    salon_a = new_salon_id()
    response = await http.get("/marketplace/api/state", headers=bearer(token_for(settings, salon_a)))
    assert response.status_code == 200
    assert [s["salon_id"] for s in response.json()["salons"]] == [salon_a]


async def test_a_genuine_token_is_accepted(
    http: httpx.AsyncClient, settings: Settings, channel: AbstractChannel
) -> None:
    """The control: the same call with a genuine token publishes the pairing request."""
    salon_id = new_salon_id()
    response = await post_qr(http, token_for(settings, salon_id))
    assert response.status_code == 202
    await take_from_queue(channel, WHATSAPP.name, lambda m: isinstance(m, RequestPairing) and m.salon_id == salon_id)


@pytest.mark.parametrize(
    "salon_id",
    [-1, 0, 2**53 + 1, 2**64, "abc", "1; DROP TABLE companies", True, 1.5, [1], {"$gt": 0}],
    ids=["negative", "zero", "over-2^53", "2^64", "letters", "sql", "true", "fraction", "list", "operator-object"],
)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/marketplace/api/qr", {}),
        ("/marketplace/api/pairing-code", {"phone": "+7 900 123-45-67"}),
        ("/marketplace/activate", {}),
    ],
)
async def test_a_malformed_salon_id_in_the_body_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str, body: dict[str, Any], salon_id: Any
) -> None:
    response = await http.post(
        path, headers=bearer(token_for(settings, new_salon_id())), json={**body, "salon_id": salon_id}
    )
    assert response.status_code == 422, response.text[:300]
    await no_effect.assert_clean()


async def test_a_token_id_given_as_a_string_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect
) -> None:
    """The page's script sends numbers: "123" is not silently read as the salon 123."""
    salon_id = new_salon_id()
    response = await http.post(
        "/marketplace/api/qr", headers=bearer(token_for(settings, salon_id)), json={"salon_id": str(salon_id)}
    )
    assert response.status_code == 422
    await no_effect.assert_clean()
