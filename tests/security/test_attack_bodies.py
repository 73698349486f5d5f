"""Hostile bodies on every POST route: over the size limit (declared, chunked, or a lying header), not JSON,
nested 10,000 levels deep. Each gets a fast 4xx and publishes nothing; the gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.config import Settings
from tests.integration.gateway.sse_support import ServedGateway
from tests.security.conftest import NoEffect, bearer, token_for
from tests.unit.gateway.gateway_support import new_salon_id

pytestmark = pytest.mark.integration

POSTS = (
    "/webhook/yclients",
    "/webhook/yclients/data",
    "/marketplace/activate",
    "/marketplace/api/qr",
    "/marketplace/api/pairing-code",
)
# A refusal this fast cannot have parsed 10,000 levels recursively or waited for a body that never comes.
FAST_S = 2.0


def valid_body(settings: Settings, path: str, salon_id: int) -> dict[str, Any]:
    """A body the route accepts (the attacks below wrap or replace it)."""
    bodies: dict[str, dict[str, Any]] = {
        "/webhook/yclients": {
            "salon_id": salon_id,
            "application_id": settings.YCLIENTS_APP_ID,
            "event": "uninstall",
            "partner_token": settings.YCLIENTS_PARTNER_TOKEN.get_secret_value(),
        },
        "/webhook/yclients/data": {"company_id": salon_id, "resource": "record", "resource_id": 1, "data": {}},
        "/marketplace/activate": {},
        "/marketplace/api/qr": {},
        "/marketplace/api/pairing-code": {"phone": "+7 900 123-45-67"},
    }
    return bodies[path]


def padded(settings: Settings, path: str, size: int) -> bytes:
    """A syntactically valid body of at least `size` bytes (so only its size is wrong)."""
    body = valid_body(settings, path, new_salon_id())
    body["padding"] = "x" * size
    return json.dumps(body).encode()


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("path", POSTS)
async def test_a_body_over_the_limit_with_content_length_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str
) -> None:
    token = token_for(settings, new_salon_id())
    body = padded(settings, path, settings.MAX_BODY_BYTES)
    started = time.monotonic()
    response = await http.post(path, content=body, headers={"Content-Type": "application/json", **bearer(token)})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert time.monotonic() - started < FAST_S
    await no_effect.assert_clean()


@pytest.mark.parametrize("path", POSTS)
async def test_a_chunked_body_over_the_limit_without_content_length_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str
) -> None:
    token = token_for(settings, new_salon_id())
    body = padded(settings, path, settings.MAX_BODY_BYTES)
    request = http.build_request(
        "POST", path, content=chunks(body), headers={"Content-Type": "application/json", **bearer(token)}
    )
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    response = await http.send(request)
    assert response.status_code == 413
    await no_effect.assert_clean()


async def test_a_chunked_body_under_the_limit_is_accepted(http: httpx.AsyncClient, settings: Settings) -> None:
    """The control: chunked transfer itself is fine; only the size is refused above."""
    body = padded(settings, "/webhook/yclients/data", 1024)
    response = await http.post(
        "/webhook/yclients/data", content=chunks(body, 100), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200


async def raw_exchange(served: ServedGateway, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read the answer until the server closes or 5 s pass."""
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        await writer.drain()
        received = b""
        async with asyncio.timeout(5):
            while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
        return received
    finally:
        writer.close()


async def test_a_huge_declared_length_is_refused_before_any_body_arrives(
    served: ServedGateway, no_effect: NoEffect
) -> None:
    started = time.monotonic()
    answer = await raw_exchange(
        served,
        b"POST /webhook/yclients HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000000\r\n\r\n{",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < FAST_S
    await no_effect.assert_clean()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"hello"),
        ("application/x-www-form-urlencoded", b"salon_id=1&event=uninstall"),
        ("application/json", b'{"salon_id": 1,'),
        ("application/json", b"[1, 2, 3]"),
        ("application/json", b'"just a string"'),
        ("application/json", b'{"salon_id": NaN}'),
        ("application/json", b'{"salon_id": Infinity}'),
        ("application/json", b"\xff\xfe\x00{"),
        ("application/json", b"<xml>no</xml>"),
    ],
    ids=["text", "form", "truncated", "array", "string", "nan", "infinity", "not-utf8", "xml"],
)
@pytest.mark.parametrize("path", POSTS)
async def test_a_body_that_is_not_a_json_object_is_refused(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str, content_type: str, body: bytes
) -> None:
    headers = {"Content-Type": content_type, **bearer(token_for(settings, new_salon_id()))}
    response = await http.post(path, content=body, headers=headers)
    assert response.status_code in (400, 422), (response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/json")
    await no_effect.assert_clean()


# The QR request's body is optional (JSON null is the same as no body), so null is refused everywhere else.
@pytest.mark.parametrize("path", [p for p in POSTS if p != "/marketplace/api/qr"])
async def test_a_json_null_body_is_refused_where_a_body_is_required(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str
) -> None:
    headers = {"Content-Type": "application/json", **bearer(token_for(settings, new_salon_id()))}
    response = await http.post(path, content=b"null", headers=headers)
    assert response.status_code in (400, 422), (response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/json")
    await no_effect.assert_clean()


def nested(depth: int, *, kind: str) -> str:
    """JSON nested `depth` levels deep, in arrays or in objects."""
    if kind == "arrays":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize("path", POSTS)
async def test_json_nested_ten_thousand_levels_deep_is_refused_fast(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str, kind: str
) -> None:
    outer = json.dumps(valid_body(settings, path, new_salon_id()))
    # The hostile value sits in a field the route would otherwise ignore or keep: only its depth is wrong.
    body = outer[:-1] + (", " if outer != "{}" else "") + '"extra": ' + nested(10_000, kind=kind) + "}"
    started = time.monotonic()
    response = await http.post(
        path,
        content=body.encode(),
        headers={"Content-Type": "application/json", **bearer(token_for(settings, new_salon_id()))},
    )
    elapsed = time.monotonic() - started
    assert response.status_code in (400, 422), (response.status_code, response.text[:200])
    assert elapsed < FAST_S
    await no_effect.assert_clean()


@pytest.mark.parametrize("path", ["/webhook/yclients", "/webhook/yclients/data"])
async def test_moderately_deep_json_is_refused_before_it_reaches_a_message(
    http: httpx.AsyncClient, settings: Settings, no_effect: NoEffect, path: str
) -> None:
    """Deep enough to pass the parser (under Python's recursion limit), far deeper than any webhook."""
    body = valid_body(settings, path, new_salon_id())
    text = json.dumps(body)[:-1] + ', "extra": ' + nested(900, kind="objects") + "}"
    response = await http.post(path, content=text.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    await no_effect.assert_clean()


async def test_the_gateway_still_answers_after_the_attacks(http: httpx.AsyncClient) -> None:
    assert (await http.get("/readyz")).status_code == 200
