"""The YClients client against httpx.MockTransport: headers, bodies, envelopes, status → error mapping."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from shared.yclients import (
    ALREADY_INSTALLED_MESSAGE,
    CompanyProfile,
    InstallStatus,
    NoLimit,
    YClientsAlreadyInstalled,
    YClientsClient,
    YClientsError,
    YClientsNotFound,
    YClientsPermanentError,
    YClientsTransientError,
)

TOKEN = "partner-token-unit-0123456789"
API_KEY = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
BASE = "https://api.yclients.test"
APP_ID = 77

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that answers with a fixed response and keeps the requests."""

    def __init__(self, response: httpx.Response | Exception) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


class CountingLimiter:
    """Counts the calls it lets through and how many requests the transport had seen when each was done."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.calls = 0
        self.recorder = recorder
        self.seen_on_entry: list[int] = []
        self.seen_on_exit: list[int] = []

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.calls += 1
        self.seen_on_entry.append(len(self.recorder.requests) if self.recorder else 0)
        try:
            yield
        finally:
            self.seen_on_exit.append(len(self.recorder.requests) if self.recorder else 0)


def make_client(handler: Handler, limiter: CountingLimiter | None = None) -> YClientsClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return YClientsClient(
        http, base_url=BASE + "/", partner_token=SecretStr(TOKEN), application_id=APP_ID, limiter=limiter
    )


def envelope(status: int, message: str, errors: dict[str, Any] | None = None) -> httpx.Response:
    meta: dict[str, Any] = {"message": message}
    if errors is not None:
        meta["errors"] = errors
    return httpx.Response(status, json={"success": False, "data": None, "meta": meta})


def ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data, "meta": {}})


def assert_secret_free(exc: BaseException) -> None:
    text = f"{exc} {exc!r} {getattr(exc, 'message', '')}"
    assert TOKEN not in text
    assert API_KEY not in text


# ---- requests -------------------------------------------------------------------------------------------


async def test_headers_and_limiter_on_every_call() -> None:
    rec = Recorder(ok({"id": 1, "title": "Салон"}))
    limiter = CountingLimiter()
    client = make_client(rec, limiter)
    await client.get_company(1)
    request = rec.requests[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/vnd.yclients.v2+json"
    assert request.headers["Content-Type"] == "application/json"
    assert str(request.url) == f"{BASE}/api/v1/company/1/"
    assert limiter.calls == 1


@pytest.mark.parametrize("answer", [ok({"id": 1}), httpx.Response(500), httpx.ReadTimeout("t")])
async def test_the_limiter_learns_the_call_is_done_only_after_the_answer(answer: httpx.Response | Exception) -> None:
    rec = Recorder(answer)
    limiter = CountingLimiter(rec)
    client = make_client(rec, limiter)
    with contextlib.suppress(YClientsError):
        await client.get_company(1)
    # Entered before the request went out; left after it was answered (or failed), whatever the outcome.
    assert (limiter.seen_on_entry, limiter.seen_on_exit) == ([0], [1])


async def test_company_profile_from_envelope() -> None:
    data = {
        "id": 962302,
        "title": "Салон «Ромашка»",
        "phone": "+7 900 000-00-00",
        "timezone_name": "Europe/Moscow",
        "timezone": 3,
        "city": "Москва",
        "address": "ул. Ленина, 1",
        "country": "Россия",
    }
    client = make_client(Recorder(ok(data)))
    profile = await client.get_company(962302)
    assert profile == CompanyProfile(
        id=962302,
        title="Салон «Ромашка»",
        phone="+7 900 000-00-00",
        timezone="Europe/Moscow",
        city="Москва",
        address="ул. Ленина, 1",
    )


async def test_company_profile_tolerates_missing_fields() -> None:
    client = make_client(Recorder(ok({"id": 5})))
    assert await client.get_company(5) == CompanyProfile(id=5, title="")


async def test_callback_body_and_path() -> None:
    rec = Recorder(httpx.Response(201, json={"success": True, "data": None, "meta": []}))
    client = make_client(rec)
    await client.activate(12, API_KEY, ["https://gw.example/webhook/yclients/data"])
    request = rec.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/marketplace/partner/callback"
    assert json.loads(request.content) == {
        "salon_id": 12,
        "application_id": APP_ID,
        "api_key": API_KEY,
        "webhook_urls": ["https://gw.example/webhook/yclients/data"],
        "channels": ["whatsapp"],
    }
    assert request.headers["Content-Type"] == "application/json"


async def test_callback_201_with_empty_body_is_success() -> None:
    await make_client(Recorder(httpx.Response(201))).activate(1, API_KEY, [])


async def test_callback_refuses_bad_arguments_locally() -> None:
    rec = Recorder(httpx.Response(201))
    client = make_client(rec)
    with pytest.raises(ValueError):
        await client.activate(1, "", [])
    with pytest.raises(ValueError):
        await client.activate(1, API_KEY, [f"https://x/{i}" for i in range(11)])
    assert rec.requests == []


async def test_redirects_are_not_followed() -> None:
    rec = Recorder(httpx.Response(301, headers={"Location": "https://yclients.com/"}))
    with pytest.raises(YClientsPermanentError) as info:
        await make_client(rec).activate(1, API_KEY, [])
    assert info.value.status == 301
    assert len(rec.requests) == 1


async def test_install_status_active() -> None:
    data = {"connection_status": {"status": "active"}, "logs": [], "payments": []}
    rec = Recorder(ok(data))
    status = await make_client(rec).get_install_status(9)
    assert status == InstallStatus(status="active", raw=data)
    assert str(rec.requests[0].url) == f"{BASE}/marketplace/salon/9/application/{APP_ID}"


async def test_install_status_404_is_none() -> None:
    rec = Recorder(envelope(404, "Not found"))
    assert await make_client(rec).get_install_status(9) is None


async def test_uninstall_list_and_update_channel() -> None:
    rec = Recorder(ok([{"salon_id": 1}, "junk"]))
    client = make_client(rec)
    assert await client.list_salons(page=2, count=1000) == [{"salon_id": 1}]
    assert rec.requests[-1].url.params["page"] == "2"
    assert rec.requests[-1].url.params["count"] == "1000"
    assert rec.requests[-1].url.path == f"/marketplace/application/{APP_ID}/salons"
    rec.response = ok(None)
    await client.uninstall(3)
    assert rec.requests[-1].url.path == f"/marketplace/salon/3/application/{APP_ID}/uninstall"
    assert rec.requests[-1].method == "POST"
    await client.update_channel(3, False)
    assert rec.requests[-1].url.path == "/marketplace/application/update_channel"
    assert json.loads(rec.requests[-1].content) == {
        "salon_id": 3,
        "application_id": APP_ID,
        "channel_slug": "whatsapp",
        "is_available": False,
    }
    with pytest.raises(ValueError):
        await client.list_salons(count=1001)


# ---- error mapping --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "error_class", "retryable", "message"),
    [
        (envelope(401, "Unauthorized"), YClientsPermanentError, False, "Unauthorized"),
        (envelope(422, "Invalid parameters", {"api_key": ["required"]}), YClientsPermanentError, False, "api_key"),
        (envelope(400, "Агрегатор не найден"), YClientsPermanentError, False, "Агрегатор не найден"),
        (envelope(403, ALREADY_INSTALLED_MESSAGE), YClientsAlreadyInstalled, False, "уже установил"),
        (envelope(403, "Нет доступа к приложению"), YClientsPermanentError, False, "Нет доступа"),
        (envelope(404, "Не найдено"), YClientsNotFound, False, "Не найдено"),
        (envelope(409, "Conflict"), YClientsPermanentError, False, "Conflict"),
        (envelope(429, "Too many requests"), YClientsTransientError, True, "Too many"),
        (envelope(500, "Server error"), YClientsTransientError, True, "Server error"),
        (httpx.Response(502, text="<html>bad gateway</html>"), YClientsTransientError, True, "Bad Gateway"),
        (httpx.Response(503), YClientsTransientError, True, "Service Unavailable"),
        (
            httpx.Response(401, json={"errors": {"code": 401, "message": "Token invalid"}, "meta": []}),
            YClientsPermanentError,
            False,
            "Token invalid",
        ),
        (
            httpx.Response(401, json={"errors": {"message": "second"}, "meta": {"message": "first"}}),
            YClientsPermanentError,
            False,
            "first",
        ),
        (
            httpx.Response(200, json={"success": False, "meta": {"message": "nope"}}),
            YClientsPermanentError,
            False,
            "nope",
        ),
    ],
)
async def test_status_mapping(
    response: httpx.Response, error_class: type[YClientsError], retryable: bool, message: str
) -> None:
    client = make_client(Recorder(response))
    with pytest.raises(YClientsError) as info:
        await client.activate(5, API_KEY, [])
    exc = info.value
    assert type(exc) is error_class
    assert exc.retryable is retryable
    assert exc.status == response.status_code
    assert message in exc.message
    assert_secret_free(exc)


async def test_not_found_is_permanent_and_already_installed_is_not() -> None:
    assert issubclass(YClientsNotFound, YClientsPermanentError)
    assert not issubclass(YClientsAlreadyInstalled, YClientsPermanentError)
    assert issubclass(YClientsTransientError, YClientsError)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed"),
    ],
)
async def test_timeouts_and_network_errors_are_transient(exc: Exception) -> None:
    with pytest.raises(YClientsTransientError) as info:
        await make_client(Recorder(exc)).activate(5, API_KEY, [])
    assert info.value.retryable is True
    assert info.value.status is None
    assert info.value.__cause__ is None
    assert_secret_free(info.value)


async def test_secrets_echoed_by_the_server_are_scrubbed() -> None:
    response = envelope(422, f"bad key {API_KEY} for {TOKEN}", {f"api_key={API_KEY}": ["bad"]})
    with pytest.raises(YClientsPermanentError) as info:
        await make_client(Recorder(response)).activate(5, API_KEY, [])
    assert_secret_free(info.value)
    assert "***" in info.value.message


async def test_non_json_success_body_for_company_is_transient() -> None:
    with pytest.raises(YClientsTransientError):
        await make_client(Recorder(httpx.Response(200, text="<html>"))).get_company(1)


async def test_repr_hides_the_token() -> None:
    client = make_client(Recorder(ok(None)))
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(vars(client))


async def test_no_limit_enters_at_once() -> None:
    entered = False
    async with NoLimit().slot():
        entered = True
    assert entered


async def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    client = make_client(Recorder(envelope(422, f"bad {API_KEY}")))
    with pytest.raises(YClientsPermanentError):
        await client.activate(5, API_KEY, [])
    client = make_client(Recorder(httpx.ReadTimeout("t")))
    with pytest.raises(YClientsTransientError):
        await client.activate(5, API_KEY, [])
    assert TOKEN not in caplog.text
    assert API_KEY not in caplog.text
