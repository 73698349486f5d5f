"""`python -m bench.reference ingest|redirect|seed`: the reference apps the gateway is measured against.

All three run on the same server as the gateway (uvicorn through `shared.runtime.http_server`, so the same
event loop, HTTP parser and settings), with one FastAPI route and no middleware, logging or validation beyond
what is listed:
- `ingest`: `POST /webhook/yclients` parses the JSON, drops `partner_token`, one confirmed publish, 200.
- `redirect`: `GET /auth/yclients/redirect` parses the query, verifies the user_data HMAC, one confirmed
  publish, signs the onboarding JWT, 302.
- `seed`: the seed's way: the same parsing and HMAC, then `GET /api/v1/company/{id}/` on YClients (the
  sandbox) and the company upsert plus a `marketplace_events` row written inline (asyncpg, one transaction)
  before the JWT and the 302.
Publishes go to the same exchange and routing key as the gateway's (persistent, mandatory, confirmed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aio_pika
import asyncpg
import httpx
import jwt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from shared.runtime import http_server, run_until_signalled, serve_until

EXCHANGE = "marketplace"
WEBHOOK_KEY = "yclients.webhook_received"
REGISTRATION_KEY = "registration.requested"


def _b64(text: str) -> bytes:
    normalised = text.replace(" ", "+").replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)


def _asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Publisher:
    """One connection, one confirm-mode channel, the topic exchange."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None

    async def open(self) -> None:
        """Connect and declare the exchange (idempotent)."""
        self.connection = await aio_pika.connect_robust(self.url)
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)

    async def publish(self, body: bytes, routing_key: str) -> None:
        """Publish and wait for the broker's confirm."""
        assert self.exchange is not None
        message = aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await self.exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=5)

    async def close(self) -> None:
        """Close the connection."""
        if self.connection is not None:
            await self.connection.close()


def _verified_user(request: Request, partner_token: bytes) -> tuple[int, dict[str, Any]] | Response:
    query = request.query_params
    salon = query.get("salon_id", "")
    if not salon.isdigit():
        return Response("bad salon id", status_code=400)
    raw = _b64(query.get("user_data", ""))
    expected = hmac.new(partner_token, raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, query.get("user_data_sign", "")):
        return Response("bad signature", status_code=403)
    return int(salon), json.loads(raw)


def _onboarding(salon_id: int, secret: str) -> Response:
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": "yclients-whatsapp-marketplace",
            "aud": "onboarding",
            "sub": str(salon_id),
            "salon_ids": [salon_id],
            "iat": now,
            "exp": now + 3600,
        },
        secret,
        algorithm="HS256",
    )
    return RedirectResponse("/marketplace/onboarding?" + urlencode({"token": token}), status_code=302)


def create_app(kind: str, env: dict[str, str]) -> FastAPI:
    """The reference app of `kind`."""
    publisher = Publisher(env["RABBITMQ_URL"])
    partner_token = env["YCLIENTS_PARTNER_TOKEN"].encode()
    secret = env["JWT_SECRET"]
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if kind == "seed":
            state["db"] = await asyncpg.create_pool(_asyncpg_url(env["DATABASE_URL"]), min_size=2, max_size=20)
            state["http"] = httpx.AsyncClient(
                base_url=env["YCLIENTS_API_URL"],
                timeout=10,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
            )
        else:
            await publisher.open()
        state["ready"] = True
        try:
            yield
        finally:
            await publisher.close()
            if kind == "seed":
                await state["http"].aclose()
                await state["db"].close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response("ok" if state.get("ready") else "starting", status_code=200 if state.get("ready") else 503)

    if kind == "ingest":

        @app.post("/webhook/yclients")
        async def ingest(request: Request) -> Response:
            payload = json.loads(await request.body())
            payload.pop("partner_token", None)
            await publisher.publish(json.dumps(payload).encode(), WEBHOOK_KEY)
            return JSONResponse({"success": True})

    elif kind == "redirect":

        @app.get("/auth/yclients/redirect")
        async def redirect(request: Request) -> Response:
            verified = _verified_user(request, partner_token)
            if isinstance(verified, Response):
                return verified
            salon_id, user = verified
            await publisher.publish(json.dumps({"salon_ids": [salon_id], "user": user}).encode(), REGISTRATION_KEY)
            return _onboarding(salon_id, secret)

    elif kind == "seed":

        @app.get("/auth/yclients/redirect")
        async def seed(request: Request) -> Response:
            verified = _verified_user(request, partner_token)
            if isinstance(verified, Response):
                return verified
            salon_id, user = verified
            answer = await state["http"].get(
                f"/api/v1/company/{salon_id}/",
                headers={
                    "Authorization": f"Bearer {partner_token.decode()}",
                    "Accept": "application/vnd.yclients.v2+json",
                },
            )
            profile = answer.json().get("data") or {}
            async with state["db"].acquire() as conn, conn.transaction():
                company_id = await conn.fetchval(
                    """
                    INSERT INTO companies (yclients_id, title, phone, timezone, integration_status,
                                           whatsapp_connected, marketplace_user_id, marketplace_user_name)
                    VALUES ($1, $2, $3, $4, 'pending_whatsapp', false, $5, $6)
                    ON CONFLICT (yclients_id) DO UPDATE
                       SET title = excluded.title, phone = excluded.phone, timezone = excluded.timezone,
                           updated_at = now()
                    RETURNING id
                    """,
                    salon_id,
                    str(profile.get("title") or f"Салон {salon_id}"),
                    profile.get("phone"),
                    profile.get("timezone_name"),
                    str(user.get("id") or user.get("user_id") or ""),
                    user.get("name"),
                )
                await conn.execute(
                    "INSERT INTO marketplace_events (company_id, salon_id, event_type, event_data)"
                    " VALUES ($1, $2, 'registration_started', $3::jsonb)",
                    company_id,
                    salon_id,
                    json.dumps({"user_id": user.get("id")}),
                )
            return _onboarding(salon_id, secret)

    else:
        raise ValueError(f"unknown reference app {kind!r}")
    return app


async def _serve(kind: str, port: int, stop: asyncio.Event) -> None:
    app = create_app(kind, dict(os.environ))
    await serve_until(http_server(app, host="127.0.0.1", port=port), stop)


def main() -> None:
    """Serve one reference app on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("kind", choices=["ingest", "redirect", "seed"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_until_signalled(lambda stop: _serve(args.kind, args.port, stop))


if __name__ == "__main__":
    main()
