"""A minimal HTTP/1.1 keep-alive client on asyncio streams: cheap enough that the load generator measures the server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024


class HttpError(Exception):
    """The server answered something this client does not understand, or closed the connection."""


@dataclass(frozen=True)
class Request:
    """A prepared request: the bytes are built once and written as they are."""

    raw: bytes

    @classmethod
    def build(
        cls, method: str, target: str, *, host: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Request:
        """Serialise a request with Content-Length and keep-alive."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return cls(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


class Connection:
    """One keep-alive connection; `send` writes a request and reads the whole response."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect (again)."""
        await self.close()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        """Close the socket if open."""
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        self._reader = self._writer = None

    async def send(self, request: Request) -> tuple[int, bytes]:
        """Status code and body; reconnects once if the server had closed an idle connection."""
        if self._writer is None:
            await self.open()
        try:
            return await self._exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError, HttpError):
            await self.open()
            return await self._exchange(request)

    async def _exchange(self, request: Request) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(request.raw)
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            raise HttpError("response head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            if key == "content-length":
                length = int(value.strip())
            elif key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif key == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            body = await self._read_chunked()
        else:
            body = await self._reader.readexactly(length or 0)
        if close:
            await self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
