"""A private database and vhost per benchmark, the real services as processes, the references next to them."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.profiling import Profiler
from bench.sizes import Sizes
from shared.bus.broker import Broker
from shared.bus.topology import declare_all
from shared.config import Settings
from shared.db.session import make_engine
from tests.support.infra import Infra, create_infra, destroy_infra
from tests.support.processes import ROOT, ServiceProcess, Stack, free_port, running_stack

T = TypeVar("T")
APP_ID = 4242
SERVICES = ("gateway", "registration", "whatsapp", "activation")


def service_exists(name: str) -> bool:
    """True once `services/<name>/__main__.py` is there (other engineers build some of them)."""
    return (ROOT / "services" / name / "__main__.py").exists()


@dataclass
class RunContext:
    """What every benchmark of one run shares: sizes, where files go, whether to profile."""

    sizes: Sizes
    out_dir: Path
    profile: bool = False
    findings: list[str] = field(default_factory=list)

    def profiler(self) -> Profiler | None:
        """A py-spy profiler writing under `out_dir`, when profiling was asked for."""
        return Profiler(self.out_dir / "profiles") if self.profile else None


@dataclass
class BenchEnv:
    """One benchmark's infrastructure and processes."""

    infra: Infra
    stack: Stack
    env: dict[str, str]
    broker: Broker
    engine: AsyncEngine

    @property
    def partner_token(self) -> str:
        """The partner token every process of this benchmark shares."""
        return self.env["YCLIENTS_PARTNER_TOKEN"]

    def start(self, name: str, **env: str) -> ServiceProcess:
        """Start a service with extra env (blocking until ready)."""
        process: ServiceProcess = self.stack.start(name, **env)  # type: ignore[arg-type]
        return process

    def start_module(
        self, name: str, args: Sequence[str], *, http: bool, ready_line: str | None = None
    ) -> ServiceProcess:
        """Start `python -m <args>` with this benchmark's env; wait for `/readyz` or for a line in its log."""
        port = free_port() if http else 0
        argv = [sys.executable, "-m", *args, *(["--port", str(port)] if http else [])]
        log_path = self.stack.log_dir / f"{len(self.stack.running) + 1:02d}-{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own modules
                argv,
                cwd=ROOT,
                env={**os.environ, **self.stack.env, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = ServiceProcess(name, port, proc, log_path)
        self.stack.running.append(process)
        if http:
            process.wait_ready()
        elif ready_line is not None:
            deadline = time.monotonic() + 30
            while ready_line not in process.log_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start:\n{process.log_tail()}")
                time.sleep(0.05)
        return process

    async def sql(self, statement: str, **params: object) -> list[tuple[object, ...]]:
        """Run one statement on this benchmark's database."""
        async with self.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return [tuple(row) for row in result.all()] if result.returns_rows else []

    async def scalar(self, statement: str, **params: object) -> object:
        """The first column of the first row."""
        rows = await self.sql(statement, **params)
        return rows[0][0] if rows else None

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in a queue."""
        channel = await self.broker.open_channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def purge(self, queue: str) -> None:
        """Drop every ready message of a queue."""
        channel = await self.broker.open_channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            await declared.purge()
        finally:
            await channel.close()


def bench_environment(infra: Infra) -> dict[str, str]:
    """Env for every process of a benchmark: production defaults, fresh secrets, this benchmark's database and vhost."""
    return {
        "ENVIRONMENT": "local",
        "DATABASE_URL": infra.database_url,
        "RABBITMQ_URL": infra.rabbitmq_url,
        "YCLIENTS_PARTNER_TOKEN": "bench-" + secrets.token_hex(12),
        "YCLIENTS_APP_ID": str(APP_ID),
        "JWT_SECRET": secrets.token_hex(32),
        "LOG_LEVEL": "INFO",
    }


@asynccontextmanager
async def bench_env(label: str, ctx: RunContext) -> AsyncIterator[BenchEnv]:
    """A fresh migrated database and vhost, a stack of processes on free ports; all removed afterwards."""
    infra = await asyncio.to_thread(create_infra, "mp_bench")
    env = bench_environment(infra)
    broker = Broker(infra.rabbitmq_url, name=f"bench-{label}", publish_timeout_s=30)
    engine = make_engine(infra.database_url, pool_size=4)
    try:
        await broker.connect(attempts=5)
        channel = await broker.open_channel(publisher_confirms=False)
        # The services declare the same queues with their own settings: the arguments must match.
        await declare_all(channel, Settings().RETRY_DELAYS_MS)
        await channel.close()
        with running_stack(env, f"bench-{ctx.out_dir.name}-{label}") as stack:
            yield BenchEnv(infra, stack, stack.env, broker, engine)
    finally:
        await broker.close()
        await engine.dispose()
        await asyncio.to_thread(destroy_infra, infra)


async def poll(
    probe: Callable[[], Awaitable[T]], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call `probe` until it returns a truthy value; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)
