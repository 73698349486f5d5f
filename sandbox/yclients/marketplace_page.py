"""The marketplace as the salon admin sees it: an app card per salon and a signed install redirect."""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import SecretStr

from sandbox.yclients import profiles
from sandbox.yclients.state import SandboxState
from shared.tokens import encode_user_data, sign_user_data

MAX_IDS = 50
DEFAULT_USER_NAME = "Анна Смирнова"
DEFAULT_PHONE = "79006464263"  # production sends phones without '+' (YCLIENTS.md §1)
AVATAR = "https://assets.yclients.com/general/0/0.png"
REDIRECT_PATH = "/auth/yclients/redirect"
_STATUS_LABELS = {
    "pending": ("ожидает подключения", "pending"),
    "active": ("подключено", "active"),
    "freezed": ("заморожено", "freezed"),
    "uninstalled": ("отключено", "uninstalled"),
}


class ConnectError(ValueError):
    """The connect link is malformed."""


def build_marketplace_router(
    state: SandboxState, *, partner_token: SecretStr, gateway_url: str, application_id: int
) -> APIRouter:
    """``GET /marketplace`` (the page) and ``GET /marketplace/connect`` (the signed redirect)."""
    router = APIRouter()

    @router.get("/marketplace", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(state, gateway_url, application_id))

    @router.get("/marketplace/connect")
    async def connect(request: Request) -> Response:
        try:
            location, salon_ids = connect_location(
                dict(request.query_params), partner_token=partner_token, gateway_url=gateway_url
            )
        except ConnectError as exc:
            return HTMLResponse(_error_page(str(exc)), status_code=400)
        for salon_id in salon_ids:
            state.mark_pending(salon_id)
        return RedirectResponse(location, status_code=302)

    return router


def connect_location(params: dict[str, str], *, partner_token: SecretStr, gateway_url: str) -> tuple[str, list[int]]:
    """The install-redirect URL YClients would send the browser to, and the salon ids in it."""
    salon_ids = _ids(params)
    form = params.get("ids_form") or ("plain" if len(salon_ids) == 1 else "brackets")
    if form == "plain":
        if len(salon_ids) != 1:
            raise ConnectError("ids_form=plain carries exactly one salon id")
        pairs = [("salon_id", str(salon_ids[0]))]
    elif form == "brackets":
        pairs = [("salon_ids[]", str(s)) for s in salon_ids]
    elif form == "indexed":
        pairs = [(f"salon_ids[{i}]", str(s)) for i, s in enumerate(salon_ids)]
    else:
        raise ConnectError("ids_form must be plain, brackets or indexed")
    alphabet = params.get("alphabet", "urlsafe")
    if alphabet not in ("urlsafe", "standard"):
        raise ConnectError("alphabet must be urlsafe or standard")
    padding = params.get("padding", "1")
    if padding not in ("0", "1"):
        raise ConnectError("padding must be 0 or 1")
    if params.get("with_user", "1") != "0":
        raw = user_data_bytes(salon_ids, params.get("user_name") or DEFAULT_USER_NAME)
        text = encode_user_data(raw, urlsafe=alphabet == "urlsafe", padding=padding == "1")
        pairs += [("user_data", text), ("user_data_sign", sign_user_data(raw, partner_token.get_secret_value()))]
    query = urlencode(pairs, safe="[]", quote_via=quote)
    if params.get("plus_as_space") == "1":
        # An unencoded '+' in a query string is decoded as a space: the pitfall of YCLIENTS.md §1.
        query = query.replace("%2B", "+")
    return f"{gateway_url.rstrip('/')}{REDIRECT_PATH}?{query}", salon_ids


def user_data_bytes(salon_ids: list[int], user_name: str) -> bytes:
    """Compact UTF-8 JSON of the production shape (YCLIENTS.md §1), Cyrillic kept as UTF-8."""
    first = profiles.salon(salon_ids[0])
    user: dict[str, Any] = {
        "id": 700_000 + salon_ids[0] % 100_000,
        "name": user_name,
        "phone": DEFAULT_PHONE,
        "email": f"admin{salon_ids[0]}@salon.example",
        "is_approved": True,
        "avatar": AVATAR,
        "salon_name": first.title if first else "",
    }
    return json.dumps(user, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _ids(params: dict[str, str]) -> list[int]:
    texts = [params["salon_id"]] if params.get("salon_id") else []
    texts += [t for t in params.get("salon_ids", "").split(",") if t.strip()]
    if not texts:
        raise ConnectError("salon_id or salon_ids is required")
    if len(texts) > MAX_IDS:
        raise ConnectError(f"at most {MAX_IDS} salon ids")
    ids: list[int] = []
    for text in texts:
        value = text.strip()
        if not value.isascii() or not value.isdigit() or not 0 < int(value) <= profiles.MAX_COMPANY_ID:
            raise ConnectError(f"not a salon id: {value!r}")
        if int(value) not in ids:
            ids.append(int(value))
    return ids


# ---- HTML -----------------------------------------------------------------------------------------------

_STYLE = """
body{margin:0;font-family:-apple-system,'Segoe UI',Roboto,Arial,sans-serif;background:#f4f6fb;color:#1f2937}
header{background:#1b1f3b;color:#fff;padding:20px 32px}
header h1{margin:0;font-size:22px} header p{margin:6px 0 0;opacity:.8}
main{max-width:980px;margin:24px auto;padding:0 16px}
.app{display:flex;gap:16px;align-items:center;background:#fff;border-radius:14px;padding:18px 20px;
box-shadow:0 1px 3px rgba(0,0,0,.08);margin-bottom:24px}
.logo{width:56px;height:56px;border-radius:14px;background:#25d366;color:#fff;font-size:28px;
display:flex;align-items:center;justify-content:center}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:16px}
.card{background:#fff;border-radius:14px;padding:18px;box-shadow:0 1px 3px rgba(0,0,0,.08);
display:flex;flex-direction:column;gap:6px}
.card h3{margin:0;font-size:17px} .muted{color:#6b7280;font-size:14px}
.btn{margin-top:10px;display:inline-block;text-align:center;background:#7b5cff;color:#fff;text-decoration:none;
padding:10px 14px;border-radius:10px;font-weight:600;border:0;cursor:pointer;font-size:15px}
.btn:hover{background:#6544f5}
.badge{display:inline-block;font-size:12px;padding:2px 8px;border-radius:999px;background:#eef2ff;color:#4338ca}
.badge.active{background:#dcfce7;color:#166534} .badge.freezed{background:#e0f2fe;color:#075985}
.badge.uninstalled{background:#fee2e2;color:#991b1b} .badge.pending{background:#fef9c3;color:#854d0e}
.network{border:2px dashed #c7d2fe}
details{margin-top:28px;background:#fff;border-radius:14px;padding:14px 18px}
form.dev{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px;margin-top:12px}
label{font-size:13px;color:#374151;display:flex;flex-direction:column;gap:4px}
input,select{padding:8px;border:1px solid #d1d5db;border-radius:8px;font-size:14px}
footer{max-width:980px;margin:24px auto;padding:0 16px;color:#9ca3af;font-size:12px}
"""


def render_page(state: SandboxState, gateway_url: str, application_id: int) -> str:
    """The marketplace page: one card per seeded salon, one for the two-branch network, dev options."""
    singles = [s for s in profiles.SEEDED.values() if s.id not in profiles.NETWORK_IDS]
    cards = "".join(_card(state, s) for s in singles)
    branches = "".join(
        f'<div class="muted">• {escape(profiles.SEEDED[i].title)} {_badge(state, i)}</div>'
        for i in profiles.NETWORK_IDS
    )
    network_ids = ",".join(str(i) for i in profiles.NETWORK_IDS)
    cards += (
        '<div class="card network">'
        f"<h3>{escape(profiles.NETWORK_TITLE)}</h3>"
        '<div class="muted">Два филиала, подключение сразу для всей сети (salon_ids[]):</div>'
        f"{branches}"
        f'<a class="btn" href="/marketplace/connect?salon_ids={network_ids}">Подключить оба филиала</a>'
        "</div>"
    )
    return f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Маркетплейс YClients (песочница)</title><style>{_STYLE}</style></head>
<body>
<header><h1>Маркетплейс YClients</h1><p>Песочница для локальной разработки — не настоящий YClients</p></header>
<main>
<div class="app"><div class="logo">✆</div><div>
<h2 style="margin:0">ИИ-администратор в WhatsApp</h2>
<div class="muted">Приложение №{application_id}. Отвечает клиентам салона в WhatsApp, записывает и напоминает.</div>
</div></div>
<h2>Ваши филиалы</h2>
<div class="grid">{cards}</div>
<details><summary>Параметры перехода для разработчиков</summary>
<form class="dev" method="get" action="/marketplace/connect">
<label>ID филиалов (через запятую)<input name="salon_ids" value="962302" required></label>
<label>Имя пользователя<input name="user_name" value="{escape(DEFAULT_USER_NAME)}"></label>
<label>Алфавит base64<select name="alphabet"><option value="urlsafe">URL-safe (как в продакшене)</option>
<option value="standard">стандартный</option></select></label>
<label>Паддинг «=»<select name="padding"><option value="1">есть</option><option value="0">нет</option></select></label>
<label>Форма ID<select name="ids_form"><option value="">по умолчанию</option><option value="plain">salon_id</option>
<option value="brackets">salon_ids[]</option><option value="indexed">salon_ids[0]</option></select></label>
<label>«+» как пробел<select name="plus_as_space"><option value="0">нет</option>
<option value="1">да</option></select></label>
<label>Передавать user_data<select name="with_user"><option value="1">да</option>
<option value="0">нет</option></select></label>
<label>&nbsp;<button class="btn" type="submit">Подключить</button></label>
</form></details>
</main>
<footer>После нажатия «Подключить» браузер уйдёт на {escape(gateway_url.rstrip("/"))}{REDIRECT_PATH}
с подписанными user_data и user_data_sign.</footer>
</body></html>"""


def _badge(state: SandboxState, salon_id: int) -> str:
    install = state.install(salon_id)
    if install is None:
        return ""
    label, css = _STATUS_LABELS.get(install.status, (install.status, ""))
    return f'<span class="badge {css}">{escape(label)}</span>'


def _card(state: SandboxState, salon: profiles.Salon) -> str:
    badge = _badge(state, salon.id)
    return (
        '<div class="card">'
        f"<h3>{escape(salon.title)}</h3>"
        f'<div class="muted">{escape(salon.city)}, {escape(salon.address)}</div>'
        f'<div class="muted">ID филиала: {salon.id} {badge}</div>'
        f'<a class="btn" href="/marketplace/connect?salon_id={salon.id}">Подключить</a>'
        "</div>"
    )


def _error_page(reason: str) -> str:
    return (
        '<!doctype html><html lang="ru"><head><meta charset="utf-8"><title>Ошибка перехода</title>'
        f"<style>{_STYLE}</style></head><body><header><h1>Маркетплейс YClients</h1></header><main>"
        f'<div class="card"><h3>Не удалось построить переход</h3><div class="muted">{escape(reason)}</div>'
        '<a class="btn" href="/marketplace">К списку филиалов</a></div></main></body></html>'
    )
