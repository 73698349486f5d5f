"""Attacks on the webhooks: someone else's partner token or application, a forged or missing field.

Authenticity is the partner token in the body plus our application id (YCLIENTS.md §5); anything else is a
403 (or a 422 for a malformed body) and publishes nothing.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel

from shared.bus.topology import ACTIVATION
from shared.config import Settings
from shared.messages import YClientsWebhookReceived
from tests.security.conftest import NoEffect
from tests.unit.gateway.gateway_support import new_salon_id, take_from_queue

pytestmark = pytest.mark.integration

WEBHOOK = "/webhook/yclients"


def lifecycle(settings: Settings, salon_id: int, **overrides: Any) -> dict[str, Any]:
    """A genuine lifecycle webhook, with fields replaced or removed (value None)."""
    body: dict[str, Any] = {
        "salon_id": salon_id,
        "application_id": settings.YCLIENTS_APP_ID,
        "event": "uninstall",
        "partner_token": settings.YCLIENTS_PARTNER_TOKEN.get_secret_value(),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def test_a_genuine_webhook_is_accepted(
    http: httpx.AsyncClient, settings: Settings, channel: AbstractChannel
) -> None:
    """The control: the refusals below are for what each changes."""
    salon_id = new_salon_id()
    response = await http.post(WEBHOOK, json=lifecycle(settings, salon_id))
    assert response.status_code == 200
    msg = await take_from_queue(
        channel, ACTIVATION.name, lambda m: isinstance(m, YClientsWebhookReceived) and m.salon_id == salon_id
    )
    assert isinstance(msg, YClientsWebhookReceived)
    assert "partner_token" not in msg.data.body, "the partner token must never travel in a message"


def _flip_last(token: str) -> str:
    return token[:-1] + ("x" if token[-1] != "x" else "y")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: {"partner_token": "another-partner-token"}, id="other-partner-token"),
        pytest.param(
            lambda s: {"partner_token": _flip_last(s.YCLIENTS_PARTNER_TOKEN.get_secret_value())}, id="one-char-off"
        ),
        pytest.param(lambda s: {"partner_token": s.YCLIENTS_PARTNER_TOKEN.get_secret_value()[:-1]}, id="prefix"),
        pytest.param(
            lambda s: {"partner_token": s.YCLIENTS_PARTNER_TOKEN.get_secret_value() + " "}, id="trailing-space"
        ),
        pytest.param(lambda s: {"partner_token": s.YCLIENTS_PARTNER_TOKEN.get_secret_value().upper()}, id="upper-case"),
        pytest.param(lambda s: {"partner_token": ""}, id="empty-partner-token"),
        pytest.param(lambda s: {"application_id": s.YCLIENTS_APP_ID + 1}, id="another-application"),
        pytest.param(lambda s: {"application_id": 1}, id="application-1"),
    ],
)
async def test_a_webhook_that_is_not_ours_is_refused_with_403(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, change: Any
) -> None:
    response = await http.post(WEBHOOK, json=lifecycle(settings, new_salon_id(), **change(settings)))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    await no_effect.assert_clean()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"partner_token": None}, id="no-partner-token"),
        pytest.param({"application_id": None}, id="no-application-id"),
        pytest.param({"salon_id": None}, id="no-salon-id"),
        pytest.param({"event": None}, id="no-event"),
        pytest.param({"partner_token": ["x"]}, id="partner-token-list"),
        pytest.param({"partner_token": {"$ne": ""}}, id="partner-token-operator-object"),
        pytest.param({"partner_token": True}, id="partner-token-true"),
        pytest.param({"application_id": "4242 OR 1=1"}, id="application-id-sql"),
        pytest.param({"application_id": True}, id="application-id-true"),
        pytest.param({"salon_id": -1}, id="salon-negative"),
        pytest.param({"salon_id": 2**63}, id="salon-huge"),
        pytest.param({"salon_id": "12abc"}, id="salon-letters"),
        pytest.param({"salon_id": 1.5}, id="salon-fraction"),
        pytest.param({"salon_id": True}, id="salon-true"),
        pytest.param({"event": ""}, id="event-empty"),
        pytest.param({"event": "x" * 65}, id="event-too-long"),
    ],
)
async def test_a_malformed_webhook_is_refused_with_422(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, change: dict[str, Any]
) -> None:
    body = lifecycle(settings, new_salon_id())
    body.update({k: v for k, v in change.items() if v is not None})
    for key in (k for k, v in change.items() if v is None):
        body.pop(key)
    response = await http.post(WEBHOOK, json=body)
    assert response.status_code == 422, response.text
    # The refusal names the field, never echoes a value (a token, a body) back.
    assert settings.YCLIENTS_PARTNER_TOKEN.get_secret_value() not in response.text
    await no_effect.assert_clean()


@pytest.mark.parametrize(
    "company_id",
    [-1, 0, 2**63, "abc", "1; DROP TABLE companies", True, None, 1.5],
    ids=["negative", "zero", "huge", "letters", "sql", "true", "null", "fraction"],
)
async def test_a_data_webhook_with_a_bad_company_id_is_refused(
    http: httpx.AsyncClient, no_effect: NoEffect, company_id: Any
) -> None:
    body = {"company_id": company_id, "resource": "record", "resource_id": 1, "status": "create", "data": {}}
    response = await http.post(f"{WEBHOOK}/data", json=body)
    assert response.status_code == 422
    await no_effect.assert_clean()
