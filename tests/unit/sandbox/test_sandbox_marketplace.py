"""The sandbox marketplace: the page, and the signed install redirect accepted by shared.tokens."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from sandbox.yclients.marketplace_page import user_data_bytes
from shared.tokens import decode_user_data, encode_user_data, parse_salon_ids, verify_user_data
from tests.unit.sandbox.sandbox_support import GATEWAY, TOKEN


async def connect(client: httpx.AsyncClient, **params: str) -> tuple[str, list[tuple[str, str]]]:
    response = await client.get("/marketplace/connect", params=params)
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == GATEWAY
    assert location.path == "/auth/yclients/redirect"
    return location.query, parse_qsl(location.query, keep_blank_values=True)


async def test_page_lists_salons_and_the_network(client: httpx.AsyncClient) -> None:
    response = await client.get("/marketplace")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert html.count("Подключить") >= 6
    assert "Салон красоты «Ромашка»" in html
    assert "/marketplace/connect?salon_ids=200201,200202" in html
    assert 'lang="ru"' in html


@pytest.mark.parametrize("alphabet", ["urlsafe", "standard"])
@pytest.mark.parametrize("padding", ["0", "1"])
@pytest.mark.parametrize(
    ("ids", "ids_form"),
    [("962302", "plain"), ("200201,200202", "brackets"), ("200201,200202", "indexed"), ("5", "brackets")],
)
async def test_connect_redirect_verifies(
    client: httpx.AsyncClient, alphabet: str, padding: str, ids: str, ids_form: str
) -> None:
    query, items = await connect(
        client, salon_ids=ids, alphabet=alphabet, padding=padding, ids_form=ids_form, user_name="Ольга Ёлкина"
    )
    expected_ids = [int(i) for i in ids.split(",")]
    assert parse_salon_ids(items) == expected_ids
    keys = [k for k, _ in items]
    if ids_form == "plain":
        assert keys[0] == "salon_id"
    elif ids_form == "brackets":
        assert "salon_ids[]" in query  # brackets kept literal, as the docs show them
    else:
        assert keys[: len(expected_ids)] == [f"salon_ids[{i}]" for i in range(len(expected_ids))]
    params = dict(items)
    user_data = params["user_data"]
    if alphabet == "urlsafe":
        assert "+" not in user_data and "/" not in user_data
    else:
        assert "-" not in user_data and "_" not in user_data
    assert ("=" in user_data) is (padding == "1" and len(decode_user_data(user_data)) % 3 != 0)
    user = verify_user_data(user_data, params["user_data_sign"], SecretStr(TOKEN))
    assert user.name == "Ольга Ёлкина"
    assert user.phone == "79006464263"
    assert user.id is not None


async def test_connect_default_is_urlsafe_with_padding_and_production_shape(client: httpx.AsyncClient) -> None:
    _, items = await connect(client, salon_id="962302")
    params = dict(items)
    raw = user_data_bytes([962302], "Анна Смирнова")
    assert params["user_data"] == encode_user_data(raw, urlsafe=True, padding=True)
    assert decode_user_data(params["user_data"]) == raw
    assert raw.decode().startswith('{"id":')
    assert "Анна Смирнова".encode() in raw  # UTF-8, not \u escapes
    for field in ("name", "phone", "email", "is_approved", "avatar", "salon_name"):
        assert f'"{field}":'.encode() in raw
    assert items[0][0] == "salon_id"


async def test_connect_plus_as_space_still_verifies(client: httpx.AsyncClient) -> None:
    # Find a user name whose standard base64 contains '+', then let it arrive as a space.
    for n in range(200):
        name = f"Пользователь {n}"
        if "+" in encode_user_data(user_data_bytes([962302], name)):
            break
    else:
        pytest.fail("no user name produced a '+'")
    _, items = await connect(client, salon_id="962302", alphabet="standard", user_name=name, plus_as_space="1")
    params = dict(items)
    assert " " in params["user_data"]
    assert verify_user_data(params["user_data"], params["user_data_sign"], SecretStr(TOKEN)).name == name


async def test_connect_without_user_data(client: httpx.AsyncClient) -> None:
    _, items = await connect(client, salon_id="962302", with_user="0")
    assert items == [("salon_id", "962302")]


async def test_connect_marks_pending_and_page_shows_it(client: httpx.AsyncClient) -> None:
    await connect(client, salon_ids="200201,200202")
    installs = (await client.get("/__sandbox/installs")).json()
    assert [(i["salon_id"], i["status"]) for i in installs] == [(200201, "pending"), (200202, "pending")]
    assert "ожидает подключения" in (await client.get("/marketplace")).text


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"salon_id": "abc"},
        {"salon_id": "0"},
        {"salon_ids": "1,2", "ids_form": "plain"},
        {"salon_id": "1", "ids_form": "weird"},
        {"salon_id": "1", "alphabet": "base32"},
        {"salon_id": "1", "padding": "2"},
        {"salon_ids": ",".join(str(i) for i in range(1, 52))},
    ],
)
async def test_connect_refuses_bad_parameters(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("/marketplace/connect", params=params)
    assert response.status_code == 400
    assert "text/html" in response.headers["content-type"]
