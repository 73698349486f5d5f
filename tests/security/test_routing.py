"""Unknown paths and methods get a clean 404/405 (JSON for machines, a Russian page for a browser), never a 5xx;
the OpenAPI document itself is served.
"""

from __future__ import annotations

import httpx
import pytest

from services.gateway.errors import JSON_PREFIXES

pytestmark = pytest.mark.integration

UNKNOWN_PATHS = (
    "/nope",
    "/webhook/yclients/unknown",
    "/marketplace/api/nothing",
    "/marketplace/api/status/",
    "/marketplace/static/../../../../etc/passwd",
    "/marketplace/static/%2e%2e/%2e%2e/etc/passwd",
    "/marketplace/static/nope.js",
    "/auth/yclients/redirect/extra",
    "/" + "a" * 4000,
    "/%00",
)
WRONG_METHODS = (
    ("GET", "/webhook/yclients"),
    ("PUT", "/webhook/yclients"),
    ("DELETE", "/webhook/yclients/data"),
    ("GET", "/marketplace/activate"),
    ("POST", "/auth/yclients/redirect"),
    ("DELETE", "/marketplace/onboarding"),
    ("PATCH", "/marketplace/api/state"),
    ("POST", "/marketplace/api/events"),
    ("GET", "/marketplace/api/qr"),
    ("PUT", "/marketplace/api/pairing-code"),
    ("POST", "/marketplace/health"),
    ("TRACE", "/healthz"),
)


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
async def test_an_unknown_path_is_a_clean_404(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"

    page = await http.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 404
    if path.startswith(JSON_PREFIXES):
        # Machine paths (the page's script, YClients, probes) answer JSON whatever they accept.
        assert page.json()["error"] == "not_found"
    else:
        assert page.headers["content-type"].startswith("text/html")
        assert "Страница не найдена" in page.text and "YClients" in page.text


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
async def test_a_method_a_route_does_not_have_is_a_clean_405(http: httpx.AsyncClient, method: str, path: str) -> None:
    response = await http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"]
    assert method not in response.headers["allow"]
    assert response.json()["error"] == "method_not_allowed"


async def test_the_openapi_document_is_served(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert paths["/auth/yclients/redirect"]["get"]["responses"]["302"]["headers"]["Location"]["required"] is True
    assert "text/html" in paths["/marketplace/onboarding"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in paths["/marketplace/api/events"]["get"]["responses"]["200"]["content"]
