"""shared.yclients.YClientsClient against the sandbox in-process: the two agree on the contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from shared.yclients import (
    CompanyProfile,
    YClientsAlreadyInstalled,
    YClientsClient,
    YClientsError,
    YClientsNotFound,
    YClientsPermanentError,
    YClientsTransientError,
)
from tests.unit.sandbox.sandbox_support import APP_ID, TOKEN

API_KEY = "f" * 64
HOOKS = ["http://127.0.0.1:8000/webhook/yclients/data"]


@pytest.fixture
async def yclients(client: httpx.AsyncClient) -> AsyncIterator[YClientsClient]:
    yield YClientsClient(client, base_url="http://sandbox.test", partner_token=SecretStr(TOKEN), application_id=APP_ID)


async def test_company_install_status_uninstall(yclients: YClientsClient, client: httpx.AsyncClient) -> None:
    profile = await yclients.get_company(962302)
    assert profile == CompanyProfile(
        id=962302,
        title="Салон красоты «Ромашка»",
        phone="+79006464263",
        timezone="Europe/Moscow",
        city="Москва",
        address="ул. Ленина, 1",
    )
    assert await yclients.get_install_status(962302) is None
    await yclients.activate(962302, API_KEY, HOOKS)
    status = await yclients.get_install_status(962302)
    assert status is not None and status.status == "active"
    with pytest.raises(YClientsAlreadyInstalled):
        await yclients.activate(962302, API_KEY, HOOKS)
    salons = await yclients.list_salons()
    assert [s["salon_id"] for s in salons] == [962302]
    await yclients.update_channel(962302, False)
    await yclients.uninstall(962302)
    status = await yclients.get_install_status(962302)
    assert status is not None and status.status == "uninstalled"
    with pytest.raises(YClientsNotFound):
        await yclients.uninstall(962302)
    headers = (await client.get("/__sandbox/calls")).json()[0]["headers"]
    assert headers["accept"] == "application/vnd.yclients.v2+json"
    assert all(c["auth_ok"] and c["accept_ok"] for c in (await client.get("/__sandbox/calls")).json())


@pytest.mark.parametrize(
    ("mode", "error", "retryable"),
    [
        ("5xx", YClientsTransientError, True),
        ("429", YClientsTransientError, True),
        ("401", YClientsPermanentError, False),
        ("422", YClientsPermanentError, False),
        ("400_aggregator", YClientsPermanentError, False),
        ("404", YClientsNotFound, False),
        ("403_installed", YClientsAlreadyInstalled, False),
    ],
)
async def test_fault_modes_map_to_client_errors(
    yclients: YClientsClient, client: httpx.AsyncClient, mode: str, error: type[YClientsError], retryable: bool
) -> None:
    spec: dict[str, Any] = {"endpoint": "callback", "mode": mode, "count": 1}
    assert (await client.post("/__sandbox/faults", json=spec)).status_code == 201
    with pytest.raises(YClientsError) as info:
        await yclients.activate(962302, API_KEY, HOOKS)
    assert type(info.value) is error
    assert info.value.retryable is retryable
    assert TOKEN not in str(info.value) and API_KEY not in str(info.value)


async def test_validation_error_names_the_fields(yclients: YClientsClient) -> None:
    with pytest.raises(YClientsPermanentError) as info:
        await yclients.activate(962302, API_KEY, ["http://example.com/hook"])
    assert info.value.status == 422
    assert "webhook_urls" in info.value.message


async def test_wrong_token_is_permanent(client: httpx.AsyncClient) -> None:
    wrong = YClientsClient(
        client, base_url="http://sandbox.test", partner_token=SecretStr("not-the-token"), application_id=APP_ID
    )
    with pytest.raises(YClientsPermanentError) as info:
        await wrong.get_company(1)
    assert info.value.status == 401
    assert "not-the-token" not in str(info.value)
