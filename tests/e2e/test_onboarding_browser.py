"""The onboarding page in a real headless Chromium: marketplace click → QR → phone scans → connected, no reload.

Chromium is Debian's (`apt-get install chromium`, done by the Makefile in CI), driven by Playwright's Python
package; `playwright install` is never needed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import WhatsAppSession
from shared.tokens import issue_onboarding_token
from tests.support.processes import OUTPUT, Stack, running_stack
from tests.unit.gateway.gateway_support import put_company, put_session

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = OUTPUT / "screenshots"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

_salon_ids = itertools.count(random.randint(8_000_000, 8_900_000) * 100)


@pytest.fixture(scope="class")
def browser_stack(test_env: dict[str, str]) -> Iterator[Stack]:
    """Sandbox, gateway, registration and whatsapp worker (emulator engine) as processes."""
    with running_stack(test_env, "browser") as stack:
        stack.start("sandbox")
        # "Back to YClients" lands on the sandbox marketplace, so the test can follow it.
        stack.start("gateway", YCLIENTS_UI_URL=stack.url("sandbox") + "/marketplace")
        stack.start("registration")
        stack.start("whatsapp", WHATSAPP_ENGINE="emulator")
        yield stack


@pytest.fixture(scope="class")
def page_stack(test_env: dict[str, str]) -> Iterator[Stack]:
    """Sandbox and gateway only: the state tests write session rows no whatsapp worker may pick up meanwhile."""
    with running_stack(test_env, "browser-states") as stack:
        stack.start("sandbox")
        stack.start("gateway", YCLIENTS_UI_URL=stack.url("sandbox") + "/marketplace")
        yield stack


@pytest.fixture
async def session_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[list[int]]:
    """Salon ids whose whatsapp_sessions rows a test wrote by hand; removed afterwards (no worker owns them)."""
    salon_ids: list[int] = []
    yield salon_ids
    async with sessionmaker() as session:
        await session.execute(delete(WhatsAppSession).where(WhatsAppSession.salon_id.in_(salon_ids)))
        await session.commit()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield chromium
        await chromium.close()


async def open_onboarding(browser: Browser, stack: Stack, salon_id: int, **context: Any) -> tuple[Page, list[str]]:
    """A page that clicked «Подключить» on the sandbox marketplace and landed on our onboarding page."""
    ctx = await browser.new_context(locale="ru-RU", **context)
    page = await ctx.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    await page.goto(f"{stack.url('sandbox')}/marketplace/connect?salon_id={salon_id}")
    assert page.url.startswith(stack.url("gateway") + "/marketplace/onboarding?token="), page.url
    return page, problems


async def scan(stack: Stack, salon_id: int, payload: str) -> httpx.Response:
    """The emulated phone scans the QR."""
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{stack.url('whatsapp')}/emulator/scan", json={"session_id": f"company_{salon_id}", "qr": payload}
        )


class TestPairing:
    """The real flow: registration, QR or code from the emulator, the emulated phone pairs."""

    async def test_the_admin_scans_the_qr_and_the_page_turns_connected_without_reload(
        self, browser_stack: Stack, browser: Browser
    ) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        salon_id = next(_salon_ids)
        page, problems = await open_onboarding(
            browser, browser_stack, salon_id, viewport={"width": 1280, "height": 900}
        )
        card = page.locator(f'.salon[data-salon-id="{salon_id}"]')

        # Nobody clicks anything: the page asks for the first QR by itself once the salon is registered.
        qr = card.locator(".qr-frame svg")
        await qr.wait_for(state="visible", timeout=40_000)
        await page.evaluate("window.__notReloaded = true")
        assert "Код 1 из" in await card.locator(".qr-meta").inner_text()
        await page.screenshot(path=str(SCREENSHOTS / "onboarding-qr.png"), full_page=True)

        payload = await card.locator(".qr-frame").get_attribute("data-payload")
        assert payload and payload.count(",") >= 3
        stale = await scan(browser_stack, salon_id, payload.replace(payload[2:6], "zzzz", 1))
        assert stale.status_code == 409
        accepted = await scan(browser_stack, salon_id, payload)
        assert accepted.status_code == 200, accepted.text

        await card.locator('[data-role="heading"]', has_text="WhatsApp подключён").wait_for(timeout=20_000)
        assert await page.evaluate("window.__notReloaded === true")
        assert await card.locator(".qr-frame").count() == 0
        assert await card.get_attribute("data-state") == "connected"
        await page.screenshot(path=str(SCREENSHOTS / "onboarding-connected.png"), full_page=True)
        assert problems == []
        await page.context.close()

    async def test_on_a_phone_screen_the_qr_is_large_and_the_code_alternative_works(
        self, browser_stack: Stack, browser: Browser
    ) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        salon_id = next(_salon_ids)
        page, problems = await open_onboarding(
            browser,
            browser_stack,
            salon_id,
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        card = page.locator(f'.salon[data-salon-id="{salon_id}"]')
        frame = card.locator(".qr-frame")
        await frame.locator("svg").wait_for(state="visible", timeout=40_000)
        box = await frame.bounding_box()
        assert box is not None and box["width"] >= 300, box  # most of a 390 px wide screen
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways on a phone"
        await page.screenshot(path=str(SCREENSHOTS / "onboarding-qr-phone.png"), full_page=True)

        # The admin cannot scan (one phone): pairing by phone number instead.
        await card.get_by_text("Привязать по номеру телефона").click()
        await card.locator('input[name="phone"]').fill("12")
        await card.get_by_role("button", name="Получить код").click()
        error = card.locator('[data-role="error"]')
        await error.wait_for(state="visible", timeout=10_000)
        assert "от 10 до 15 цифр" in await error.inner_text()

        await card.locator('input[name="phone"]').fill("+7 (900) 646-42-63")
        await card.get_by_role("button", name="Получить код").click()
        code = card.locator('[data-role="pairing-code"]')
        await code.wait_for(state="visible", timeout=30_000)
        shown = (await code.inner_text()).strip()
        assert len(shown) == 9 and shown[4] == "-", shown
        await page.screenshot(path=str(SCREENSHOTS / "onboarding-code-phone.png"), full_page=True)

        async with httpx.AsyncClient(timeout=10) as client:
            entered = await client.post(
                f"{browser_stack.url('whatsapp')}/emulator/pair",
                json={"session_id": f"company_{salon_id}", "code": shown},
            )
        assert entered.status_code == 200, entered.text
        await card.locator('[data-role="heading"]', has_text="WhatsApp подключён").wait_for(timeout=20_000)
        await page.screenshot(path=str(SCREENSHOTS / "onboarding-connected-phone.png"), full_page=True)
        # The one refused request is the deliberately short number above (the browser logs that 422 too).
        assert [p for p in problems if "422" not in p] == []
        assert (
            len([p for p in problems if p.startswith("HTTP 422") and p.endswith("/marketplace/api/pairing-code")]) == 1
        )
        await page.context.close()


class TestStates:
    """Every state the page can be in, written straight into the database (no WhatsApp worker running)."""

    async def test_every_state_of_a_multi_salon_install_is_explained(
        self,
        page_stack: Stack,
        browser: Browser,
        sessionmaker: async_sessionmaker[AsyncSession],
        test_env: dict[str, str],
        session_rows: list[int],
    ) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        expired, failed, frozen, removed, unreachable, gone = (next(_salon_ids) for _ in range(6))
        await put_company(sessionmaker, expired, title="Салон на Невском")
        await put_session(sessionmaker, expired, state="pairing_expired")
        await put_company(
            sessionmaker,
            failed,
            title="Барбершоп «Борода»",
            status="activation_failed",
            last_error="YClients answered 401",
        )
        await put_session(sessionmaker, failed, state="connected", phone="79001234567")
        await put_company(sessionmaker, frozen, title="Ногтевая студия", status="frozen")
        await put_company(sessionmaker, removed, title="Спа «Лотос»", status="active")
        await put_session(sessionmaker, removed, state="logged_out")
        await put_company(sessionmaker, unreachable, title="Салон <b>Жасмин</b>")
        await put_session(sessionmaker, unreachable, state="engine_unreachable")
        await put_company(sessionmaker, gone, title="Салон у метро", status="uninstalled")
        ids = [expired, failed, frozen, removed, unreachable, gone]
        session_rows.extend(ids)
        token = issue_onboarding_token(ids, secret=SecretStr(test_env["JWT_SECRET"]))

        ctx = await browser.new_context(locale="ru-RU", viewport={"width": 390, "height": 844}, is_mobile=True)
        page = await ctx.new_page()
        await page.goto(f"{page_stack.url('gateway')}/marketplace/onboarding?token={token}")

        expected = {
            expired: ("Время QR-кода истекло", "Получить новый QR-код"),
            failed: ("Не удалось активировать интеграцию", "Повторить активацию"),
            frozen: ("Интеграция приостановлена", "Открыть YClients"),
            removed: ("WhatsApp отвязан", "Получить новый QR-код"),
            unreachable: ("Сервер WhatsApp сейчас недоступен", None),
            gone: ("Приложение отключено в YClients", "Открыть YClients"),
        }
        for salon_id, (heading, action) in expected.items():
            card = page.locator(f'.salon[data-salon-id="{salon_id}"]')
            await card.locator('[data-role="heading"]', has_text=heading).wait_for(timeout=10_000)
            if action:
                assert await card.locator(".actions").get_by_text(action).count() == 1, (salon_id, action)
        failed_text = await page.locator(f'.salon[data-salon-id="{failed}"] .status-text').inner_text()
        assert "ключ партнёра" in failed_text
        # The title is shown as text, never as markup.
        assert (
            await page.locator(f'.salon[data-salon-id="{unreachable}"] .salon-title').inner_text()
            == "Салон <b>Жасмин</b>"
        )
        assert await page.locator(".salon-title b").count() == 0
        await page.screenshot(path=str(SCREENSHOTS / "onboarding-states-phone.png"), full_page=True)
        await ctx.close()

    async def test_when_every_salon_is_active_the_admin_is_sent_back_to_yclients(
        self,
        page_stack: Stack,
        browser: Browser,
        sessionmaker: async_sessionmaker[AsyncSession],
        test_env: dict[str, str],
    ) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        salon_id = next(_salon_ids)  # active with no session row: nothing for a WhatsApp worker to pick up
        await put_company(sessionmaker, salon_id, title="Салон «Готово»", status="active")
        token = issue_onboarding_token([salon_id], secret=SecretStr(test_env["JWT_SECRET"]))

        ctx = await browser.new_context(locale="ru-RU", viewport={"width": 1280, "height": 900})
        page = await ctx.new_page()
        await page.goto(f"{page_stack.url('gateway')}/marketplace/onboarding?token={token}")
        card = page.locator(f'.salon[data-salon-id="{salon_id}"]')
        await card.locator('[data-role="heading"]', has_text="Готово! WhatsApp подключён").wait_for(timeout=10_000)
        banner = page.locator("#banner")
        await banner.get_by_text("вернём вас в YClients").wait_for(timeout=5_000)
        await page.screenshot(path=str(SCREENSHOTS / "onboarding-active.png"), full_page=True)

        await page.wait_for_url(f"{page_stack.url('sandbox')}/marketplace", timeout=20_000)
        await ctx.close()

    async def test_an_expired_link_explains_what_to_do(
        self, page_stack: Stack, browser: Browser, test_env: dict[str, str]
    ) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        token = issue_onboarding_token(
            [next(_salon_ids)],
            secret=SecretStr(test_env["JWT_SECRET"]),
            now=datetime.now(UTC) - timedelta(hours=2),
        )
        ctx = await browser.new_context(locale="ru-RU", viewport={"width": 390, "height": 844}, is_mobile=True)
        page = await ctx.new_page()
        response = await page.goto(f"{page_stack.url('gateway')}/marketplace/onboarding?token={token}")
        assert response is not None and response.status == 401
        assert await page.locator("h1").inner_text() == "Ссылка устарела"
        back = page.get_by_role("link", name="Открыть YClients")
        assert await back.get_attribute("href") == page_stack.url("sandbox") + "/marketplace"
        await page.screenshot(path=str(SCREENSHOTS / "error-expired-phone.png"), full_page=True)
        await ctx.close()
