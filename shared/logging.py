"""JSON logs with the message and correlation ids on every line, and secrets redacted."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_context", default=None)
_REDACTED = "***"
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class log_context:  # a class for speed, named like the function it replaced
    """Attach fields (message_id, correlation_id, salon_id ...) to every log line inside the block."""

    # A class, not a @contextmanager generator: it is entered on every request and every message.
    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        self._token: contextvars.Token[dict[str, Any] | None] | None = None

    def __enter__(self) -> None:
        current = _context.get()
        added = {k: v for k, v in self._fields.items() if v is not None}
        self._token = _context.set({**current, **added} if current else added)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _context.reset(self._token)
            self._token = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; secrets known to the process are replaced by ***."""

    def __init__(self, service: str, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.service = service
        # Short strings would redact ordinary words; real secrets are long.
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Replace every known secret in `text`."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as a JSON line."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        context = _context.get()
        if context:
            entry.update(context)
        fields = record.__dict__
        for key in sorted(fields.keys() - _STANDARD_ATTRS):
            if not key.startswith("_"):
                entry[key] = fields[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(_ENCODER.encode(entry))


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
_second: tuple[int, str] = (0, "")


def _timestamp(created: float) -> str:
    """`created` as ISO 8601 UTC with milliseconds (what `datetime.isoformat` gives), the second formatted once."""
    global _second
    second = int(created)
    micros = round((created - second) * 1_000_000)
    if micros >= 1_000_000:
        return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    cached_second, prefix = _second
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (second, prefix)
    return f"{prefix}.{micros // 1000:03d}+00:00"


def setup_logging(service: str, *, level: str = "INFO", secrets: Sequence[str] = ()) -> None:
    """Send every logger's output to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The JSON lines carry none of these record fields; looking them up is most of the cost of a log call
    # (the Logging HOWTO's "Optimization" section). The caller's frame is still in every traceback.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Their INFO lines carry full URLs (with onboarding tokens) and are noise at our volume.
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
