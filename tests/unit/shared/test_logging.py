"""JSON log lines carry the message context and never a known secret."""

from __future__ import annotations

import json
import logging

from shared.logging import JsonFormatter, log_context

SECRET = "partner-token-that-must-not-leak"


def render(formatter: JsonFormatter, msg: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": msg, "args": args, **extra})
    return dict(json.loads(formatter.format(record)))


def test_context_fields_are_on_every_line() -> None:
    formatter = JsonFormatter("gateway")
    with log_context(message_id="m-1", correlation_id="c-1", salon_id=42):
        line = render(formatter, "handled")
    assert (line["message_id"], line["correlation_id"], line["salon_id"]) == ("m-1", "c-1", 42)
    assert line["service"] == "gateway"
    assert "message_id" not in render(formatter, "outside")


def test_known_secrets_are_redacted_in_message_and_extras() -> None:
    formatter = JsonFormatter("activation", secrets=[SECRET])
    line = render(formatter, "calling with %s", SECRET, error=f"Bearer {SECRET}")
    text = json.dumps(line)
    assert SECRET not in text
    assert line["msg"] == "calling with ***"
    assert line["error"] == "Bearer ***"
