"""Lifecycle webhooks the platform sends to the gateway (YCLIENTS.md §5)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from sandbox.yclients.state import SandboxState, now_iso

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhook/yclients"
WEBHOOK_TIMEOUT_S = 10.0
_MAX_BODY_KEPT = 2000


@dataclass(frozen=True)
class Delivery:
    """What the gateway answered to one webhook (status None when it could not be reached)."""

    status: int | None
    body: str
    error: str | None


class GatewayNotifier:
    """Sends ``{salon_id, application_id, event, partner_token}`` to ``{BASE_URL}/webhook/yclients``."""

    def __init__(
        self,
        state: SandboxState,
        *,
        base_url: str,
        partner_token: SecretStr,
        application_id: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._state = state
        self._url = base_url.rstrip("/") + WEBHOOK_PATH
        self._token = partner_token
        self._app_id = application_id
        self._transport = transport

    async def send(self, event: str, salon_id: Any, overrides: Mapping[str, Any] | None = None) -> Delivery:
        """Post one lifecycle webhook; ``overrides`` replace body fields (e.g. a wrong token for tests)."""
        payload: dict[str, Any] = {
            "salon_id": salon_id,
            "application_id": self._app_id,
            "event": event,
            "partner_token": self._token.get_secret_value(),
        }
        payload.update(overrides or {})
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=WEBHOOK_TIMEOUT_S) as http:
                response = await http.post(self._url, json=payload)
            delivery = Delivery(response.status_code, response.text[:_MAX_BODY_KEPT], None)
        except httpx.HTTPError as exc:
            delivery = Delivery(None, "", type(exc).__name__)
        log.info("lifecycle webhook %s salon=%s -> %s", event, salon_id, delivery.status or delivery.error)
        shown = {k: v for k, v in payload.items() if k != "partner_token"}
        self._state.webhooks.append(
            {
                "event": event,
                "url": self._url,
                "payload": shown,
                "partner_token_ok": payload["partner_token"] == self._token.get_secret_value(),
                "status": delivery.status,
                "response": delivery.body,
                "error": delivery.error,
                "at": now_iso(),
            }
        )
        return delivery
