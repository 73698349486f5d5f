"""No secret reaches a log: the partner token, the JWT secret, an api_key or an onboarding token.

Runs last (see conftest.py) over every line this session logged: the service processes' logs under
test-output/logs/** written since the session started, and the session's in-process lines (inprocess.log).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config import DEFAULT_JWT_SECRET, DEFAULT_PARTNER_TOKEN
from shared.db.models import Company
from tests.conftest import JWT_SECRET, PARTNER_TOKEN
from tests.security.logscan import InProcessLog, scan, suite_log_lines
from tests.support.processes import OUTPUT

SUMMARY = OUTPUT / "security" / "log-scan.json"
SECRETS = {
    "partner token": PARTNER_TOKEN,
    "JWT secret": JWT_SECRET,
    # `make dev`, bench and chaos runs use the shipped defaults.
    "default partner token": DEFAULT_PARTNER_TOKEN,
    "default JWT secret": DEFAULT_JWT_SECRET,
}


async def stored_key_hashes(sessionmaker: async_sessionmaker[AsyncSession]) -> set[str]:
    """SHA-256 digests of the api keys the session's activations stored."""
    async with sessionmaker() as session:
        rows = await session.execute(select(Company.api_key_hash).where(Company.api_key_hash.is_not(None)))
        return {h for h in rows.scalars() if h}


@pytest.mark.integration
async def test_no_secret_appears_in_any_log_line_of_the_suite(
    inprocess_logs: InProcessLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    found = scan(suite_log_lines(inprocess_logs), secrets=SECRETS, key_hashes=await stored_key_hashes(sessionmaker))
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(
        json.dumps({"files": len(found.files), "lines": found.lines_read, "leaks": len(found.leaks)}, indent=2) + "\n"
    )
    assert found.lines_read > 0, "no log line to scan: the in-process capture is not installed"
    assert found.leaks == [], f"{len(found.leaks)} secret(s) in the logs:\n" + "\n".join(found.leaks[:50])
