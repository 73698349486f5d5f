"""The log scan itself: it finds each kind of secret with its file:line, and ignores what is not one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path

from pydantic import SecretStr

from shared.tokens import issue_onboarding_token
from tests.conftest import JWT_SECRET, PARTNER_TOKEN
from tests.security.logscan import InProcessLog, capture_inprocess_logs, scan, suite_log_lines

SECRETS = {"partner token": PARTNER_TOKEN, "JWT secret": JWT_SECRET}


def write_log(path: Path, *lines: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_each_kind_of_secret_is_found_with_its_file_and_line(tmp_path: Path) -> None:
    live_key, revoked_key = secrets.token_hex(32), secrets.token_hex(32)
    token = issue_onboarding_token([42], secret=SecretStr(JWT_SECRET))
    log = write_log(
        tmp_path / "logs" / "run" / "01-gateway-1.log",
        {"msg": "fine"},
        {"msg": f"calling with Bearer {PARTNER_TOKEN}"},
        {"msg": "signing", "key": JWT_SECRET},
        {"msg": f"GET /marketplace/onboarding?token={token}"},
        {"msg": "callback", "api_key": live_key},
        {"msg": "callback", "api_key": revoked_key},
        {"msg": "stored", "api_key_hash": hashlib.sha256(live_key.encode()).hexdigest()},
        {"msg": "fuzzed", "event": "0" * 64},
        {"msg": "redacted", "error": "token *** refused"},
        {"msg": "amqp://guest:******@127.0.0.1/"},
    )
    capture = InProcessLog(path=tmp_path / "logs" / "inprocess.log", session="s1", started_at=time.time() - 60)
    found = scan(
        suite_log_lines(capture, tmp_path / "logs"),
        secrets=SECRETS,
        key_hashes={hashlib.sha256(live_key.encode()).hexdigest()},
    )
    where = f"{log}:"
    assert found.lines_read == 10
    assert found.leaks == [
        f"{where}2: the partner token",
        f"{where}3: the JWT secret",
        f"{where}4: an onboarding token (JWT {token[:6]}…)",
        f"{where}5: an api_key ({live_key[:6]}…, its SHA-256 is in companies.api_key_hash)",
        f"{where}6: a 64-hex value that may be an api_key ({revoked_key[:6]}…)",
        f"{where}9: a secret the redactor replaced with *** (a code path hands a secret to a logger)",
    ]
    assert all(PARTNER_TOKEN not in leak and live_key not in leak and token not in leak for leak in found.leaks)


def test_only_this_sessions_lines_are_read(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    old = write_log(logs / "old" / "01-gateway-1.log", {"msg": PARTNER_TOKEN})
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    inprocess = write_log(
        logs / "inprocess.log",
        {"msg": PARTNER_TOKEN, "test_session": "another"},
        {"msg": "mine", "test_session": "mine"},
    )
    capture = InProcessLog(path=inprocess, session="mine", started_at=time.time() - 60)
    lines = list(suite_log_lines(capture, logs))
    assert [(line.path, line.number) for line in lines] == [(inprocess, 2)]


def test_in_process_records_are_written_tagged_and_unredacted(tmp_path: Path) -> None:
    path = tmp_path / "inprocess.log"
    # Not a real secret: this record also reaches the session's own capture, which the final scan reads.
    value = "marker-not-a-secret-3c9e"
    with capture_inprocess_logs(path) as capture:
        logging.getLogger("services.gateway.test").info("with %s", value, extra={"salon_id": 7})
        # As in production (shared.logging.setup_logging): the HTTP client's INFO lines carry full URLs.
        logging.getLogger("httpx").info("HTTP Request: GET /marketplace/onboarding?token=eyJ.eyJ.x")
        logging.getLogger("httpx").warning("connection trouble")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["msg"] for line in lines] == [f"with {value}", "connection trouble"]
    assert lines[0]["test_session"] == capture.session and lines[0]["salon_id"] == 7
    assert lines[0]["test"].startswith("tests/security/test_logscan.py::")
