"""The suite's logs, gathered and searched for secrets.

Two sources: the services run as processes write JSON lines under `test-output/logs/**` (tests/support/
processes.py); everything logged inside the pytest process itself (the gateway served in-process, the workers'
functions, the sandbox app) is written by `capture_inprocess_logs` to `test-output/logs/inprocess.log`, tagged
with the test session, with the same logger levels production uses (`shared.logging.setup_logging`) and with
**no** redaction, so a code path that hands a secret to a logger is caught even where the redactor would hide it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shared.logging import JsonFormatter

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "test-output" / "logs"
INPROCESS_LOG = LOG_DIR / "inprocess.log"
# Other sessions append to the same file; it is cut when it grows past this (their next lines still land).
INPROCESS_LOG_MAX_BYTES = 50 * 1024 * 1024
# Loggers `setup_logging` keeps at WARNING in every service (their INFO lines carry full URLs with tokens).
QUIET_LOGGERS = ("uvicorn.access", "httpx", "httpcore", "aiormq", "aio_pika")

# An onboarding token (any JWT with a signature): the header and payload are base64url JSON objects.
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# An api_key is 32 random bytes as 64 hex digits; nothing else the services log looks like that.
HEX64 = re.compile(r"(?<![0-9A-Fa-f])[0-9a-f]{64}(?![0-9A-Fa-f])")
# A key is uniformly random: fewer distinct digits than this (e.g. a fuzzer's "000…0") is not one. The chance
# that 64 random hex digits use fewer than 8 of the 16 is below 1e-15.
MIN_KEY_DIGITS = 8
# What `JsonFormatter` writes in place of a known secret: the redactor caught a code path that logs one.
REDACTED = re.compile(r"(?<!\*)\*\*\*(?!\*)")


@dataclass(frozen=True)
class InProcessLog:
    """This session's in-process log: where it is, how its lines are tagged, when the session started."""

    path: Path
    session: str
    started_at: float


class _Tag(logging.Filter):
    """Tags every line with the session and the running test; drops what production keeps quiet."""

    def __init__(self, session: str) -> None:
        super().__init__()
        self.session = session

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and record.name.startswith(QUIET_LOGGERS):
            return False
        record.test_session = self.session
        record.test = os.environ.get("PYTEST_CURRENT_TEST", "")
        return True


@contextmanager
def capture_inprocess_logs(path: Path = INPROCESS_LOG) -> Iterator[InProcessLog]:
    """Write every log record of this process as a JSON line to `path` (INFO and up) until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > INPROCESS_LOG_MAX_BYTES:
        path.write_bytes(b"")
    capture = InProcessLog(path=path, session=uuid.uuid4().hex[:12], started_at=time.time())
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(JsonFormatter("tests"))
    handler.addFilter(_Tag(capture.session))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


@dataclass(frozen=True)
class LogLine:
    """One line of one log file."""

    path: Path
    number: int
    text: str

    def where(self) -> str:
        """`file:line`, relative to the repository."""
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.number}"


def suite_log_lines(capture: InProcessLog, log_dir: Path = LOG_DIR) -> Iterator[LogLine]:
    """Every line this session logged: process logs written since it started, and its own in-process lines."""
    for path in sorted(log_dir.rglob("*.log")):
        if path == capture.path:
            yield from _session_lines(path, capture.session)
            continue
        try:
            if path.stat().st_mtime < capture.started_at:
                continue
        except FileNotFoundError:
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, text in enumerate(lines, start=1):
                yield LogLine(path, number, text.rstrip("\n"))


def _session_lines(path: Path, session: str) -> Iterator[LogLine]:
    marker = f'"test_session": "{session}"'
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, start=1):
            if marker in text:
                yield LogLine(path, number, text.rstrip("\n"))


@dataclass
class Findings:
    """Secrets found in log lines, as `file:line: what` (the secret itself is never repeated)."""

    lines_read: int = 0
    files: set[Path] = field(default_factory=set)
    leaks: list[str] = field(default_factory=list)

    def add(self, line: LogLine, what: str) -> None:
        self.leaks.append(f"{line.where()}: {what}")


def _masked(value: str) -> str:
    return value[:6] + "…"


def scan(lines: Iterable[LogLine], *, secrets: dict[str, str], key_hashes: set[str]) -> Findings:
    """Look for the known secrets, onboarding tokens and api keys in every line.

    `secrets` maps a name to a literal secret (partner token, JWT secret). `key_hashes` are the SHA-256 hex
    digests of api keys in `companies.api_key_hash`: a 64-hex value whose digest is among them is an api_key;
    any other random-looking 64-hex value is reported too (revoked keys lose their stored hash), unless it is
    one of the stored hashes itself (a hash is not the key).
    """
    found = Findings()
    for line in lines:
        found.lines_read += 1
        found.files.add(line.path)
        text = line.text
        for name, secret in secrets.items():
            if secret and secret in text:
                found.add(line, f"the {name}")
        for token in JWT_SHAPE.findall(text):
            found.add(line, f"an onboarding token (JWT {_masked(token)})")
        for value in HEX64.findall(text):
            if value in key_hashes or len(set(value)) < MIN_KEY_DIGITS:
                continue
            if hashlib.sha256(value.encode()).hexdigest() in key_hashes:
                found.add(line, f"an api_key ({_masked(value)}, its SHA-256 is in companies.api_key_hash)")
            else:
                found.add(line, f"a 64-hex value that may be an api_key ({_masked(value)})")
        if REDACTED.search(text):
            found.add(line, "a secret the redactor replaced with *** (a code path hands a secret to a logger)")
    return found
