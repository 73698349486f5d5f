"""Constants and helpers for the sandbox tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx

TOKEN = "sandbox-unit-partner-token-42"
APP_ID = 4242
GATEWAY = "http://gateway.test"
V2 = "application/vnd.yclients.v2+json"


class FakeClock:
    """A monotonic clock that moves ``step`` seconds each time it is read (0 = frozen)."""

    def __init__(self, step: float = 0.25) -> None:
        self.now = 1_000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Gateway:
    """A MockTransport handler standing in for the gateway's webhook endpoint."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.fail: Exception | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail is not None:
            raise self.fail
        self.received.append({"url": str(request.url), "json": json.loads(request.content)})
        return httpx.Response(self.status, json={"ok": True})


def yc_headers(token: str = TOKEN, **extra: str) -> dict[str, str]:
    """The headers our YClients client sends."""
    return {"Authorization": f"Bearer {token}", "Accept": V2, "Content-Type": "application/json", **extra}


def callback_body(salon_id: int = 962302, **overrides: Any) -> dict[str, Any]:
    """A valid partner-callback body."""
    body: dict[str, Any] = {
        "salon_id": salon_id,
        "application_id": APP_ID,
        "api_key": "0123456789abcdef" * 4,
        "webhook_urls": ["https://gateway.example/webhook/yclients/data"],
        "channels": ["whatsapp"],
    }
    body.update(overrides)
    return body
