"""HTML rendering: the Jinja2 environment (autoescaped) and the Russian error page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/marketplace/static"

# The onboarding token travels in the page URL: never leak it to another site through the Referer header.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
}


@dataclass(frozen=True)
class Action:
    """A link the error page offers so the admin always has a next step."""

    label: str
    url: str


def make_templates() -> Jinja2Templates:
    """The gateway's templates (autoescape on for .html, so user data is always escaped)."""
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.globals["static"] = STATIC_PREFIX
    return templates


def templates_of(request: Request) -> Jinja2Templates:
    """The app's templates."""
    templates: Jinja2Templates = request.app.state.templates
    return templates


def error_page(
    request: Request,
    status_code: int,
    *,
    title: str,
    message: str,
    actions: list[Action] | None = None,
    hint: str | None = None,
) -> Response:
    """A readable Russian error page with what to do next."""
    response = templates_of(request).TemplateResponse(
        request,
        "error.html",
        {"title": title, "message": message, "actions": actions or [], "hint": hint, "status_code": status_code},
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
    return response
