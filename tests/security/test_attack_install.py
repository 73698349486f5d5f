"""Attacks on the install redirect: forged or missing signatures, signatures over the wrong bytes, bad salon ids.

Each is refused with a 4xx page and has no effect: nothing published, no outbox row.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlencode

import httpx
import pytest
from aio_pika.abc import AbstractChannel

from shared.bus.topology import REGISTRATION
from shared.config import Settings
from shared.messages import RegistrationRequested
from shared.tokens import MAX_SALON_ID, encode_user_data
from tests.security.conftest import NoEffect, signed_user_data, user_data_bytes
from tests.unit.gateway.gateway_support import new_salon_id, take_from_queue

pytestmark = pytest.mark.integration

REDIRECT = "/auth/yclients/redirect"
USER = {"id": 7001, "name": "Анна Смирнова", "phone": "79006464263", "email": "anna@salon.example"}


async def redirect(http: httpx.AsyncClient, pairs: list[tuple[str, str]]) -> httpx.Response:
    """The redirect with the query built exactly from `pairs` (brackets unescaped, as YClients sends them)."""
    return await http.get(REDIRECT + "?" + urlencode(pairs, safe="[]", quote_via=quote))


def assert_refused_page(response: httpx.Response, status: int) -> None:
    """A Russian HTML page a person can act on, not a redirect and not JSON."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert "YClients" in response.text


async def test_a_correctly_signed_redirect_is_accepted(
    http: httpx.AsyncClient, settings: Settings, channel: AbstractChannel
) -> None:
    """The control: the attacks below fail for what they change, not for a broken setup."""
    salon_id = new_salon_id()
    response = await redirect(http, [("salon_id", str(salon_id)), *signed_user_data(settings, USER).items()])
    assert response.status_code == 302
    msg = await take_from_queue(
        channel, REGISTRATION.name, lambda m: isinstance(m, RegistrationRequested) and m.salon_id == salon_id
    )
    assert isinstance(msg, RegistrationRequested) and msg.data.user is not None
    assert msg.data.user.name == USER["name"]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda sign: "0" * 64, id="zeros"),
        pytest.param(lambda sign: sign[:-1] + ("0" if sign[-1] != "0" else "1"), id="last-digit-changed"),
        pytest.param(lambda sign: sign[:32], id="truncated"),
        pytest.param(lambda sign: sign + "00", id="extended"),
        pytest.param(lambda sign: "g" * 64, id="not-hex"),
        pytest.param(lambda sign: "", id="empty"),
        pytest.param(lambda sign: " " * 64, id="blank"),
    ],
)
async def test_a_forged_signature_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, forge: object
) -> None:
    params = signed_user_data(settings, USER)
    assert callable(forge)
    pairs = [("salon_id", str(new_salon_id())), ("user_data", params["user_data"])]
    pairs.append(("user_data_sign", forge(params["user_data_sign"])))
    assert_refused_page(await redirect(http, pairs), 403)
    await no_effect.assert_clean()


async def test_a_missing_signature_is_refused(http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect) -> None:
    params = signed_user_data(settings, USER)
    assert_refused_page(
        await redirect(http, [("salon_id", str(new_salon_id())), ("user_data", params["user_data"])]), 403
    )
    await no_effect.assert_clean()


async def test_data_swapped_under_a_genuine_signature_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect
) -> None:
    genuine = signed_user_data(settings, USER)
    other = encode_user_data(user_data_bytes({**USER, "id": 1, "name": "Злоумышленник"}))
    pairs = [("salon_id", str(new_salon_id())), ("user_data", other), ("user_data_sign", genuine["user_data_sign"])]
    assert_refused_page(await redirect(http, pairs), 403)
    await no_effect.assert_clean()


@pytest.mark.parametrize("urlsafe", [False, True], ids=["standard-alphabet", "url-safe-alphabet"])
async def test_a_signature_over_the_base64_text_instead_of_the_bytes_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, urlsafe: bool
) -> None:
    text = encode_user_data(user_data_bytes(USER), urlsafe=urlsafe)
    key = settings.YCLIENTS_PARTNER_TOKEN.get_secret_value().encode()
    wrong = hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()
    pairs = [("salon_id", str(new_salon_id())), ("user_data", text), ("user_data_sign", wrong)]
    assert_refused_page(await redirect(http, pairs), 403)
    await no_effect.assert_clean()


async def test_a_signature_with_another_key_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect
) -> None:
    raw = user_data_bytes(USER)
    wrong = hmac.new(b"another-partner-token", raw, hashlib.sha256).hexdigest()
    pairs = [("salon_id", str(new_salon_id())), ("user_data", encode_user_data(raw)), ("user_data_sign", wrong)]
    assert_refused_page(await redirect(http, pairs), 403)
    await no_effect.assert_clean()


@pytest.mark.parametrize(
    "pairs",
    [
        pytest.param([("salon_id", "-5")], id="negative"),
        pytest.param([("salon_id", "0")], id="zero"),
        pytest.param([("salon_id", str(MAX_SALON_ID + 1))], id="over-2^53"),
        pytest.param([("salon_id", "9" * 40)], id="40-digits"),
        pytest.param([("salon_id", "abc")], id="letters"),
        pytest.param([("salon_id", "12abc")], id="digits-then-letters"),
        pytest.param([("salon_id", "1e3")], id="exponent"),
        pytest.param([("salon_id", "0x10")], id="hex"),
        pytest.param([("salon_id", "1.5")], id="fraction"),
        pytest.param([("salon_id", "١٢٣")], id="arabic-indic-digits"),
        pytest.param([("salon_id", "")], id="empty"),
        pytest.param([("salon_id", "1 OR 1=1")], id="sql"),
        pytest.param([("salon_id", "<script>alert(1)</script>")], id="html"),
        pytest.param([("salon_ids[]", "7"), ("salon_ids[]", "-7")], id="one-bad-in-a-list"),
        pytest.param([("salon_ids[]", str(10_000 + i)) for i in range(51)], id="51-salons"),
        pytest.param([], id="none"),
    ],
)
async def test_a_bad_salon_id_is_refused(
    http: httpx.AsyncClient, no_effect: NoEffect, pairs: list[tuple[str, str]]
) -> None:
    assert_refused_page(await redirect(http, pairs), 400)
    await no_effect.assert_clean()


async def test_fifty_salons_are_still_accepted(http: httpx.AsyncClient, channel: AbstractChannel) -> None:
    """The limit is 50: the 51-salon refusal above is the limit, not a general failure of lists."""
    first = new_salon_id()
    ids = [first + i for i in range(50)]
    response = await redirect(http, [("salon_ids[]", str(s)) for s in ids])
    assert response.status_code == 302
    msg = await take_from_queue(
        channel, REGISTRATION.name, lambda m: isinstance(m, RegistrationRequested) and m.salon_id == first
    )
    assert isinstance(msg, RegistrationRequested) and msg.data.salon_ids == ids
