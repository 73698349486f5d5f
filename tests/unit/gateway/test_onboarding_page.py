"""`GET /marketplace/onboarding`: the token check, what the page shows, and that user data is escaped."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.tokens import issue_onboarding_token
from tests.unit.gateway.gateway_support import new_salon_id, put_company, put_session

PAGE = "/marketplace/onboarding"


def token_for(settings: Settings, *salon_ids: int, now: datetime | None = None) -> str:
    """An onboarding token as the redirect issues it."""
    return issue_onboarding_token(list(salon_ids), secret=settings.JWT_SECRET, now=now)


def initial_state(html: str) -> dict[str, Any]:
    """The snapshot the page embeds for its script."""
    found = re.search(r'<script type="application/json" id="initial-state">(.*?)</script>', html, re.S)
    assert found, "no initial state in the page"
    state: dict[str, Any] = json.loads(found.group(1))
    return state


async def test_the_page_shows_each_salon_of_the_token_with_its_title(
    client: httpx.AsyncClient, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    first, second = new_salon_id(), new_salon_id()
    await put_company(sessionmaker, first, title="Салон «Лотос» на Тверской")
    token = token_for(settings, first, second)

    response = await client.get(PAGE, params={"token": token})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert f'data-salon-id="{first}"' in html and f'data-salon-id="{second}"' in html
    assert "Салон «Лотос» на Тверской" in html
    # The second salon is not registered yet: it shows its number and that registration is under way.
    assert f"Салон {second}" in html and "Регистрируем" in html
    state = initial_state(html)
    salons = {s["salon_id"]: s for s in state["salons"]}
    assert salons[first]["registered"] is True and salons[first]["integration_status"] == "pending_whatsapp"
    assert salons[second]["registered"] is False


async def test_a_title_with_markup_is_escaped_everywhere(
    client: httpx.AsyncClient, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = new_salon_id()
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await put_company(sessionmaker, salon_id, title=evil)

    response = await client.get(PAGE, params={"token": token_for(settings, salon_id)})

    assert response.status_code == 200
    html = response.text
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    # The embedded JSON cannot close its <script> element either.
    assert "</script><img" not in html
    salons = initial_state(html)["salons"]
    assert salons[0]["title"] == evil


async def test_the_page_carries_the_current_qr_as_svg(
    client: httpx.AsyncClient, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = new_salon_id()
    await put_company(sessionmaker, salon_id, title="Барбершоп")
    payload = "2@ref-one,bm9pc2U=,aWRlbnRpdHk=,YWR2"
    expires = datetime.now(UTC) + timedelta(seconds=50)
    await put_session(
        sessionmaker,
        salon_id,
        state="pairing",
        qr_payload=payload,
        qr_seq=1,
        qr_max=6,
        qr_expires_at=expires,
        attempt_id="a1",
    )

    response = await client.get(PAGE, params={"token": token_for(settings, salon_id)})

    qr = initial_state(response.text)["salons"][0]["whatsapp"]["qr"]
    assert qr["payload"] == payload and qr["seq"] == 1 and qr["max"] == 6
    assert qr["svg"].startswith('<svg xmlns="http://www.w3.org/2000/svg"')


@pytest.mark.parametrize("case", ["expired", "garbage", "other_key", "missing", "empty_salons"])
async def test_an_unusable_token_gets_a_401_page_sending_the_admin_back_to_yclients(
    client: httpx.AsyncClient, settings: Settings, case: str
) -> None:
    salon_id = new_salon_id()
    if case == "expired":
        token = token_for(settings, salon_id, now=datetime.now(UTC) - timedelta(hours=2))
        expected = "Ссылка устарела"
    elif case == "garbage":
        token, expected = "not.a.jwt", "Ссылка недействительна"
    elif case == "other_key":
        token = issue_onboarding_token([salon_id], secret=SecretStr("another-secret-of-at-least-32-bytes!"))
        expected = "Ссылка недействительна"
    elif case == "missing":
        token, expected = "", "Ссылка недействительна"
    else:
        token, expected = "eyJhbGciOiJub25lIn0.eyJzYWxvbl9pZHMiOltdfQ.", "Ссылка недействительна"

    response = await client.get(PAGE, params={"token": token} if token else None)

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert expected in response.text
    assert "нажмите «Подключить»" in response.text
    assert f'href="{settings.YCLIENTS_UI_URL}"' in response.text


async def test_unknown_paths_and_wrong_methods(client: httpx.AsyncClient) -> None:
    page = await client.get("/marketplace/nothing-here", headers={"Accept": "text/html"})
    api = await client.get("/marketplace/api/nothing")
    wrong = await client.get("/marketplace/api/qr")
    post_page = await client.post("/marketplace/onboarding", headers={"Accept": "text/html"})

    assert page.status_code == 404 and "Страница не найдена" in page.text
    assert api.status_code == 404 and api.json()["error"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    assert post_page.status_code == 405 and "text/html" in post_page.headers["content-type"]


async def test_static_assets_are_served(client: httpx.AsyncClient) -> None:
    js = await client.get("/marketplace/static/onboarding.js")
    css = await client.get("/marketplace/static/onboarding.css")
    assert js.status_code == 200 and "EventSource" in js.text
    assert css.status_code == 200 and ".qr-frame" in css.text
