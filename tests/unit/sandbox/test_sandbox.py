"""The YClients sandbox in-process: endpoints, header checks, validation, rate limit, faults, control API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sandbox.yclients.app import create_app
from sandbox.yclients.options import SandboxOptions
from shared.config import Settings
from tests.support.wait import wait_for
from tests.unit.sandbox.sandbox_support import (
    APP_ID,
    GATEWAY,
    TOKEN,
    V2,
    FakeClock,
    Gateway,
    callback_body,
    yc_headers,
)

ALREADY = "Пользователь уже установил это приложение."


async def install(client: httpx.AsyncClient, salon_id: int = 962302, **overrides: Any) -> httpx.Response:
    return await client.post(
        "/marketplace/partner/callback", json=callback_body(salon_id, **overrides), headers=yc_headers()
    )


async def status_of(client: httpx.AsyncClient, salon_id: int = 962302) -> httpx.Response:
    return await client.get(f"/marketplace/salon/{salon_id}/application/{APP_ID}", headers=yc_headers())


async def calls(client: httpx.AsyncClient, path: str | None = None) -> list[dict[str, Any]]:
    response = await client.get("/__sandbox/calls", params={"path": path} if path else None)
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def add_fault(client: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    response = await client.post("/__sandbox/faults", json=spec)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


# ---- company --------------------------------------------------------------------------------------------


async def test_company_seeded_profile_in_v2_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/company/962302/", headers=yc_headers())
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["meta"] == {}
    data = body["data"]
    assert data["id"] == 962302
    assert data["title"] == "Салон красоты «Ромашка»"
    assert {"phone", "timezone_name", "city", "address", "country"} <= data.keys()


@pytest.mark.parametrize("path", ["/api/v1/company/12345/", "/api/v1/company/12345"])
async def test_company_generated_profile_with_and_without_slash(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers=yc_headers())
    assert response.status_code == 200
    assert response.json()["data"]["title"] == "Студия красоты №12345"


async def test_hundred_salons_have_distinct_profiles(client: httpx.AsyncClient) -> None:
    await client.put("/__sandbox/ratelimit", json={"per_second": None, "per_minute": None})
    titles = set()
    for salon_id in range(1, 101):
        response = await client.get(f"/api/v1/company/{salon_id}/", headers=yc_headers())
        assert response.status_code == 200
        titles.add(response.json()["data"]["title"])
    assert len(titles) == 100


@pytest.mark.parametrize("company_id", ["0", "abc", "-5", "99999999999999999999"])
async def test_company_bad_id_is_404_envelope(client: httpx.AsyncClient, company_id: str) -> None:
    response = await client.get(f"/api/v1/company/{company_id}/", headers=yc_headers())
    assert response.status_code == 404
    assert response.json()["success"] is False
    assert response.json()["meta"]["message"]


# ---- header checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": V2},
        {"Authorization": "Bearer wrong-token", "Accept": V2},
        {"Authorization": TOKEN, "Accept": V2},
        {"Authorization": f"Basic {TOKEN}", "Accept": V2},
    ],
)
async def test_bad_authorization_is_401_envelope(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/company/1/", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["success"] is False
    assert body["meta"]["message"]
    assert body["errors"]["code"] == 401


async def test_partner_and_user_token_accepted(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}, User some-user-token", "Accept": V2}
    assert (await client.get("/api/v1/company/1/", headers=headers)).status_code == 200


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
async def test_wrong_accept_is_400(client: httpx.AsyncClient, accept: str | None) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if accept:
        headers["Accept"] = accept
    response = await client.get("/api/v1/company/1/", headers=headers)
    assert response.status_code == 400
    assert "Accept" in response.json()["meta"]["message"]


async def test_accept_list_with_v2_is_fine(client: httpx.AsyncClient) -> None:
    headers = yc_headers(Accept=f"application/json, {V2};q=0.9")
    assert (await client.get("/api/v1/company/1/", headers=headers)).status_code == 200


async def test_callback_needs_json_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/marketplace/partner/callback",
        content=json.dumps(callback_body()),
        headers=yc_headers(**{"Content-Type": "text/plain"}),
    )
    assert response.status_code == 415
    assert (await client.get("/__sandbox/installs")).json() == []


async def test_unknown_partner_path_answers_an_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/marketplace/partner/nothing-here", headers=yc_headers())
    assert response.status_code == 404
    assert response.json()["success"] is False


# ---- callback -------------------------------------------------------------------------------------------


async def test_callback_201_then_already_installed(client: httpx.AsyncClient) -> None:
    first = await install(client)
    assert first.status_code == 201
    assert first.json() == {"success": True, "data": None, "meta": []}
    second = await install(client, api_key="another-key")
    assert second.status_code == 403
    assert second.json()["meta"]["message"] == ALREADY
    installs = (await client.get("/__sandbox/installs")).json()
    assert [(i["salon_id"], i["status"], i["api_key"]) for i in installs] == [
        (962302, "active", "0123456789abcdef" * 4)
    ]
    assert installs[0]["webhook_urls"] == ["https://gateway.example/webhook/yclients/data"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"salon_id": None}, "salon_id"),
        ({"salon_id": "962302"}, "salon_id"),
        ({"salon_id": 0}, "salon_id"),
        ({"salon_id": True}, "salon_id"),
        ({"application_id": "x"}, "application_id"),
        ({"api_key": ""}, "api_key"),
        ({"api_key": 12345}, "api_key"),
        ({"api_key": "k" * 256}, "api_key"),
        ({"webhook_urls": "https://a.example"}, "webhook_urls"),
        ({"webhook_urls": [f"https://a.example/{i}" for i in range(11)]}, "webhook_urls"),
        ({"webhook_urls": ["http://gateway.example/hook"]}, "webhook_urls"),
        ({"webhook_urls": ["ftp://gateway.example/hook"]}, "webhook_urls"),
        ({"webhook_urls": ["not a url"]}, "webhook_urls"),
        ({"channels": ["telegram"]}, "channels"),
        ({"channels": "whatsapp"}, "channels"),
    ],
)
async def test_callback_validation_422(client: httpx.AsyncClient, overrides: dict[str, Any], field: str) -> None:
    body = callback_body()
    for key, value in overrides.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    response = await client.post("/marketplace/partner/callback", json=body, headers=yc_headers())
    assert response.status_code == 422
    meta = response.json()["meta"]
    assert meta["message"]
    assert field in meta["errors"]
    assert (await client.get("/__sandbox/installs")).json() == []


async def test_callback_not_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/marketplace/partner/callback", content=b"[1,2", headers=yc_headers())
    assert response.status_code == 422


@pytest.mark.parametrize(
    "urls",
    [
        ["http://127.0.0.1:8000/webhook/yclients/data"],
        ["http://localhost:8000/webhook/yclients/data", "https://a.example/x"],
        [f"https://a.example/{i}" for i in range(10)],
        [],
    ],
)
async def test_callback_accepts_https_and_loopback_http(client: httpx.AsyncClient, urls: list[str]) -> None:
    assert (await install(client, webhook_urls=urls)).status_code == 201


async def test_callback_extra_http_host_from_options(settings: Settings, gateway: Gateway) -> None:
    app = create_app(settings, options=SandboxOptions(http_webhook_hosts=frozenset({"gateway"})))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http:
        response = await install(http, webhook_urls=["http://gateway:8000/webhook/yclients/data"])
    assert response.status_code == 201


async def test_callback_other_application_is_403_no_access(client: httpx.AsyncClient) -> None:
    response = await install(client, application_id=APP_ID + 1)
    assert response.status_code == 403
    assert response.json()["meta"]["message"] != ALREADY


async def test_callback_redirect_answers_301(client: httpx.AsyncClient) -> None:
    response = await client.post("/marketplace/partner/callback/redirect", json=callback_body(), headers=yc_headers())
    assert response.status_code == 301
    assert response.headers["location"].startswith("https://yclients.example/")
    assert (await status_of(client)).json()["data"]["connection_status"]["status"] == "active"


# ---- status, uninstall, lifecycle -----------------------------------------------------------------------


async def test_status_404_then_active_then_uninstalled(client: httpx.AsyncClient, gateway: Gateway) -> None:
    before = await status_of(client)
    assert before.status_code == 404
    assert before.json()["success"] is False
    await install(client)
    active = (await status_of(client)).json()["data"]
    assert active["connection_status"]["status"] == "active"
    assert isinstance(active["logs"], list) and isinstance(active["payments"], list)
    response = await client.post(f"/marketplace/salon/962302/application/{APP_ID}/uninstall", headers=yc_headers())
    assert response.status_code == 200
    assert (await status_of(client)).json()["data"]["connection_status"]["status"] == "uninstalled"

    async def webhook_arrived() -> bool:
        return len(gateway.received) == 1

    await wait_for(webhook_arrived, timeout=5, what="the uninstall webhook")
    assert gateway.received[0]["url"] == f"{GATEWAY}/webhook/yclients"
    assert gateway.received[0]["json"] == {
        "salon_id": 962302,
        "application_id": APP_ID,
        "event": "uninstall",
        "partner_token": TOKEN,
    }
    assert (await install(client)).status_code == 201  # a re-install works from scratch


async def test_uninstall_of_unknown_install_is_404(client: httpx.AsyncClient, gateway: Gateway) -> None:
    response = await client.post(f"/marketplace/salon/5/application/{APP_ID}/uninstall", headers=yc_headers())
    assert response.status_code == 404
    assert gateway.received == []


async def test_status_of_another_application_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/marketplace/salon/1/application/{APP_ID + 1}", headers=yc_headers())
    assert response.status_code == 403


async def test_control_webhook_freeze_then_payment_unfreezes(client: httpx.AsyncClient, gateway: Gateway) -> None:
    await install(client)
    gateway.status = 202
    response = await client.post("/__sandbox/webhooks/freeze", json={"salon_id": 962302})
    assert response.status_code == 202
    assert response.json()["gateway_status"] == 202
    assert gateway.received[-1]["json"] == {
        "salon_id": 962302,
        "application_id": APP_ID,
        "event": "freeze",
        "partner_token": TOKEN,
    }
    assert (await status_of(client)).json()["data"]["connection_status"]["status"] == "freezed"
    payment = {
        "salon_id": 962302,
        "application_id": APP_ID,
        "payment_sum": 1990,
        "currency_iso": "RUB",
        "payment_date": "2025-03-01 12:00:00",
        "period_from": "2025-03-01 00:00:00",
        "period_to": "2025-04-01 00:00:00",
    }
    paid = await client.post("/marketplace/partner/payment", json=payment, headers=yc_headers())
    assert paid.status_code == 200
    payment_id = paid.json()["data"]["id"]
    data = (await status_of(client)).json()["data"]
    assert data["connection_status"]["status"] == "active"
    assert data["payments"][0]["id"] == payment_id
    refund = await client.post(f"/marketplace/partner/payment/refund/{payment_id}", headers=yc_headers())
    assert refund.status_code == 200
    bad = await client.post(
        "/marketplace/partner/payment", json={**payment, "period_to": "2025-02-01"}, headers=yc_headers()
    )
    assert bad.status_code == 422
    assert "period_to" in bad.json()["meta"]["errors"]
    shown = (await client.get("/__sandbox/webhooks")).json()
    assert shown[-1]["partner_token_ok"] is True
    assert TOKEN not in json.dumps(shown)


async def test_control_webhook_overrides_and_unreachable_gateway(client: httpx.AsyncClient, gateway: Gateway) -> None:
    response = await client.post("/__sandbox/webhooks/payment", json={"salon_id": 7, "partner_token": "forged"})
    assert response.status_code == 200
    assert gateway.received[-1]["json"]["partner_token"] == "forged"
    assert (await client.get("/__sandbox/webhooks")).json()[-1]["partner_token_ok"] is False
    gateway.fail = httpx.ConnectError("refused")
    unreachable = await client.post("/__sandbox/webhooks/uninstall", json={"salon_id": 7})
    assert unreachable.status_code == 502
    assert (await client.post("/__sandbox/webhooks/BAD!", json={"salon_id": 7})).status_code == 422
    assert (await client.post("/__sandbox/webhooks/freeze", json={"salon_id": "x"})).status_code == 422


async def test_salons_list_and_update_channel(client: httpx.AsyncClient) -> None:
    for salon_id in (3, 1, 2):
        await install(client, salon_id)
    response = await client.get(
        f"/marketplace/application/{APP_ID}/salons", params={"page": 1, "count": 2}, headers=yc_headers()
    )
    assert response.status_code == 200
    body = response.json()
    assert [s["salon_id"] for s in body["data"]] == [1, 2]
    assert body["meta"]["total_count"] == 3
    too_many = await client.get(
        f"/marketplace/application/{APP_ID}/salons", params={"count": 1001}, headers=yc_headers()
    )
    assert too_many.status_code == 422
    channel = {"salon_id": 1, "application_id": APP_ID, "channel_slug": "whatsapp", "is_available": False}
    updated = await client.post("/marketplace/application/update_channel", json=channel, headers=yc_headers())
    assert updated.status_code == 200
    installs = {i["salon_id"]: i for i in (await client.get("/__sandbox/installs")).json()}
    assert installs[1]["channel_available"] == {"whatsapp": False}
    bad = await client.post(
        "/marketplace/application/update_channel", json={**channel, "is_available": "no"}, headers=yc_headers()
    )
    assert bad.status_code == 422


# ---- rate limit -----------------------------------------------------------------------------------------


async def test_sixth_call_within_a_second_is_429(client: httpx.AsyncClient, clock: FakeClock) -> None:
    clock.step = 0.0
    statuses = [(await client.get("/api/v1/company/1/", headers=yc_headers())).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    limited = await client.get("/marketplace/salon/1/application/1", headers=yc_headers())
    assert limited.status_code == 429  # one limit for every endpoint
    assert limited.json()["success"] is False
    recorded = await calls(client)
    assert [c["rate_limited"] for c in recorded] == [False] * 5 + [True, True]
    assert recorded[-1]["status"] == 429
    clock.now += 1.0
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 200


async def test_two_hundred_per_minute(client: httpx.AsyncClient, clock: FakeClock) -> None:
    clock.step = 0.25  # 4 per second: under the per-second limit
    for _ in range(200):
        assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 200
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 429
    clock.now += 60.0
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 200


async def test_rate_limit_settable_and_reset(client: httpx.AsyncClient, clock: FakeClock) -> None:
    clock.step = 0.0
    put = await client.put("/__sandbox/ratelimit", json={"per_second": 2, "per_minute": 100})
    assert put.json() == {"per_second": 2, "per_minute": 100}
    statuses = [(await client.get("/api/v1/company/1/", headers=yc_headers())).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert (await client.post("/__sandbox/reset")).status_code == 200
    assert (await client.get("/__sandbox/ratelimit")).json() == {"per_second": 5, "per_minute": 200}
    assert await calls(client) == []
    assert (await client.put("/__sandbox/ratelimit", json={"per_second": 0})).status_code == 422


async def test_control_and_page_are_not_rate_limited(client: httpx.AsyncClient, clock: FakeClock) -> None:
    clock.step = 0.0
    for _ in range(10):
        assert (await client.get("/__sandbox/calls")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


def test_options_from_env() -> None:
    options = SandboxOptions.from_env(
        {"SANDBOX_RATE_PER_SECOND": "10", "SANDBOX_RATE_PER_MINUTE": "0", "SANDBOX_HTTP_WEBHOOK_HOSTS": "gateway, GW2"}
    )
    assert options.rate_per_second == 10
    assert options.rate_per_minute is None
    assert options.http_webhook_hosts == frozenset({"gateway", "gw2"})
    assert SandboxOptions.from_env({}).rate_per_second == 5


# ---- faults ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "message"),
    [
        ("5xx", 500, None),
        ("401", 401, None),
        ("404", 404, None),
        ("422", 422, None),
        ("400_aggregator", 400, "Агрегатор не найден"),
        ("403_installed", 403, ALREADY),
        ("429", 429, None),
    ],
)
async def test_error_faults(client: httpx.AsyncClient, mode: str, status: int, message: str | None) -> None:
    await add_fault(client, endpoint="callback", mode=mode, count=1)
    response = await install(client)
    assert response.status_code == status
    assert response.json()["success"] is False
    if message:
        assert response.json()["meta"]["message"] == message
    assert (await client.get("/__sandbox/installs")).json() == []
    assert (await calls(client))[-1]["fault"] == mode
    assert (await install(client)).status_code == 201  # count=1: cleared after one use
    assert (await client.get("/__sandbox/faults")).json() == []


async def test_fault_only_hits_its_endpoint_and_star_hits_all(client: httpx.AsyncClient) -> None:
    await add_fault(client, endpoint="company", mode="5xx")
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 500
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 500  # until cleared
    assert (await status_of(client)).status_code == 404
    assert (await client.delete("/__sandbox/faults")).json() == {"cleared": 1}
    await add_fault(client, endpoint="*", mode="401", count=2)
    assert (await status_of(client)).status_code == 401
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 401
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 200


async def test_fault_probability(client: httpx.AsyncClient) -> None:
    await add_fault(client, endpoint="company", mode="5xx", probability=0.0)
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 200
    await client.delete("/__sandbox/faults")
    await add_fault(client, endpoint="company", mode="5xx", probability=1.0)
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 500


async def test_bad_fault_spec_refused(client: httpx.AsyncClient) -> None:
    bad = [
        {"endpoint": "company", "mode": "explode"},
        {"endpoint": "nowhere", "mode": "5xx"},
        {"endpoint": "company", "mode": "5xx", "count": 0},
        {"endpoint": "company", "mode": "5xx", "probability": 2},
    ]
    for spec in bad:
        assert (await client.post("/__sandbox/faults", json=spec)).status_code == 422


async def test_slow_fault_answers_after_the_delay(client: httpx.AsyncClient) -> None:
    await add_fault(client, endpoint="company", mode="slow", delay_s=0.1, count=1)
    started = time.monotonic()
    response = await client.get("/api/v1/company/1/", headers=yc_headers())
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.1


async def test_timeout_fault_hangs(client: httpx.AsyncClient) -> None:
    await add_fault(client, endpoint="company", mode="timeout", count=1)  # default hang: 30 s here
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.get("/api/v1/company/1/", headers=yc_headers()), timeout=0.2)
    record = (await calls(client, "/api/v1/company"))[-1]
    assert record["fault"] == "timeout"
    assert record["status"] is None
    assert record["delivered"] is False


async def test_timeout_fault_with_short_delay_answers_504(client: httpx.AsyncClient) -> None:
    await add_fault(client, endpoint="company", mode="timeout", delay_s=0.01, count=1)
    response = await client.get("/api/v1/company/1/", headers=yc_headers())
    assert response.status_code == 504


async def test_lost_response_applies_the_effect(client: httpx.AsyncClient) -> None:
    await add_fault(client, endpoint="callback", mode="lost_response", count=1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(install(client), timeout=0.2)
    installs = (await client.get("/__sandbox/installs")).json()
    assert [(i["status"], i["api_key"]) for i in installs] == [("active", "0123456789abcdef" * 4)]
    record = (await calls(client, "/marketplace/partner/callback"))[-1]
    assert record["fault"] == "lost_response"
    assert record["status"] == 201
    assert record["delivered"] is False
    # The client retries blindly: the platform refuses a second callback (check status first!).
    assert (await install(client)).status_code == 403
    assert (await status_of(client)).json()["data"]["connection_status"]["status"] == "active"


async def test_lost_response_with_short_delay_delivers(client: httpx.AsyncClient) -> None:
    await add_fault(client, endpoint="callback", mode="lost_response", delay_s=0.01, count=1)
    assert (await install(client)).status_code == 201
    assert (await calls(client))[-1]["delivered"] is True


# ---- calls log ------------------------------------------------------------------------------------------


async def test_calls_log_masks_the_token(client: httpx.AsyncClient) -> None:
    await install(client)
    await client.get("/api/v1/company/7/", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "text/html"})
    await client.get("/api/v1/company/7/?x=1&x=2", headers={"Authorization": "Bearer nope", "Accept": V2})
    recorded = await calls(client)
    assert TOKEN not in json.dumps(recorded)
    first, second, third = recorded
    assert first["method"] == "POST"
    assert first["path"] == "/marketplace/partner/callback"
    assert first["headers"]["authorization"] == "Bearer ***"
    assert first["body"] == callback_body()
    assert first["status"] == 201
    assert first["auth_ok"] is True and first["accept_ok"] is True
    assert first["at"]
    assert second["auth_ok"] is True and second["accept_ok"] is False and second["status"] == 400
    assert third["auth_ok"] is False and third["status"] == 401
    assert third["query"] == [["x", "1"], ["x", "2"]]
    assert [c["path"] for c in await calls(client, "/api/v1/")] == ["/api/v1/company/7/"] * 2
    assert (await client.delete("/__sandbox/calls")).json() == {"cleared": 3}
    assert await calls(client) == []


async def test_page_and_control_calls_are_not_recorded(client: httpx.AsyncClient) -> None:
    await client.get("/marketplace")
    await client.get("/healthz")
    await client.get("/__sandbox/installs")
    assert await calls(client) == []


async def test_reset_clears_everything(client: httpx.AsyncClient) -> None:
    await install(client)
    await add_fault(client, endpoint="company", mode="5xx")
    assert (await client.post("/__sandbox/reset")).json() == {"reset": True}
    assert (await client.get("/__sandbox/installs")).json() == []
    assert (await client.get("/__sandbox/faults")).json() == []
    assert await calls(client) == []
    assert (await client.get("/api/v1/company/1/", headers=yc_headers())).status_code == 200


async def test_healthz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}


def test_refuses_production() -> None:
    settings = Settings.model_construct(ENVIRONMENT="production", YCLIENTS_PARTNER_TOKEN=SecretStr("x"))
    with pytest.raises(RuntimeError):
        create_app(settings)
