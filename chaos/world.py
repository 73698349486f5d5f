"""The world a scenario runs in: a private database and vhost, proxies in front of them, the services as processes.

Every service reaches RabbitMQ and PostgreSQL through a :mod:`chaos.proxy` proxy (transparent until a
scenario breaks it); the harness itself talks to both directly, so it keeps observing while the services
are cut off. Everything listens on and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from yarl import URL

from chaos.proxy import ProxyHandle, ProxyRunner, require_loopback
from chaos.tap import Tap
from shared.bus.broker import Broker
from shared.bus.topology import WORK_QUEUES
from shared.db.session import make_engine, make_sessionmaker
from tests.support.infra import Infra, create_infra, destroy_infra
from tests.support.processes import OUTPUT, ROOT, ServiceProcess, Stack, free_port

log = logging.getLogger(__name__)

WHATSAPP_WORKER_EXISTS = (ROOT / "services" / "whatsapp" / "__main__.py").exists()
APP_ID = 4242
_QUEUE_NAMES = frozenset(queue.name for queue in WORK_QUEUES)
_RABBITMQCTL_TIMEOUT_S = 60


@dataclass(frozen=True)
class Topology:
    """How many processes of each service run (workers of a type compete for one queue)."""

    gateways: int = 2
    registration: int = 1
    activation: int = 1
    whatsapp: int = 2

    def count(self, role: str) -> int:
        """Instances of a role."""
        return int(getattr(self, role if role != "gateway" else "gateways"))


@dataclass(frozen=True)
class WorldOptions:
    """What the services are started with."""

    label: str
    retry_delays_ms: tuple[int, ...] = (500, 1000, 2000, 4000, 8000, 8000)
    topology: Topology = field(default_factory=Topology)
    extra_env: dict[str, str] = field(default_factory=dict)


def via_proxy(url: str, port: int) -> str:
    """`url` with its loopback host and port replaced by the proxy's."""
    if url.startswith("amqp"):
        amqp = URL(url)
        require_loopback(amqp.host or "")
        return str(amqp.with_host("127.0.0.1").with_port(port))
    db = make_url(url)
    require_loopback(db.host or "")
    return db.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def upstream_port(url: str, default: int) -> int:
    """The port a loopback URL points at (refusing anything that is not loopback)."""
    if url.startswith("amqp"):
        amqp = URL(url)
        require_loopback(amqp.host or "")
        return amqp.port or default
    db = make_url(url)
    require_loopback(db.host or "")
    return db.port or default


@dataclass
class ExitTime:
    """How one process ended after SIGTERM."""

    name: str
    port: int
    seconds: float
    code: int | None


class World:
    """Infrastructure, proxies, service processes and the harness's own connections for one or more scenarios."""

    def __init__(self, options: WorldOptions) -> None:
        self.options = options
        self.whatsapp_worker = WHATSAPP_WORKER_EXISTS and options.topology.whatsapp > 0
        self.partner_token = "chaos-partner-" + secrets.token_hex(12)
        self.jwt_secret = secrets.token_hex(24)
        self.infra: Infra | None = None
        self.proxies: ProxyRunner | None = None
        self.broker_proxy: ProxyHandle | None = None
        self.db_proxy: ProxyHandle | None = None
        self.stack: Stack | None = None
        self.procs: dict[str, list[ServiceProcess]] = {}
        self.engine: AsyncEngine | None = None
        self.sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self.broker: Broker | None = None
        self.tap: Tap | None = None
        self.http: httpx.AsyncClient | None = None
        self._next_salon = 5_000_000 + secrets.randbelow(4_000_000) * 100
        self.log_dir = OUTPUT / "logs" / options.label

    # -- lifetime ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start(self) -> None:
        self.infra = await asyncio.to_thread(create_infra, "mp_chaos")
        self.proxies = ProxyRunner()
        self.broker_proxy = self.proxies.start_proxy(upstream_port(self.infra.rabbitmq_url, 5672), name="rabbitmq")
        self.db_proxy = self.proxies.start_proxy(upstream_port(self.infra.database_url, 5432), name="postgresql")
        self.stack = Stack(env=self.service_env(), log_dir=self.log_dir)
        self.engine = make_engine(self.infra.database_url, pool_size=4)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.broker = Broker(self.infra.rabbitmq_url, name="chaos-harness", publish_timeout_s=5)
        await asyncio.wait_for(self.broker.connect(attempts=5), timeout=60)
        self.tap = Tap(self.infra.rabbitmq_url)
        await self.tap.start()
        self.http = httpx.AsyncClient(timeout=10, follow_redirects=False)
        await self.start_services()

    def service_env(self) -> dict[str, str]:
        """The environment every service process gets (broker and database through the proxies)."""
        assert self.infra is not None and self.broker_proxy is not None and self.db_proxy is not None
        env = {
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "INFO",
            "DATABASE_URL": via_proxy(self.infra.database_url, self.db_proxy.port),
            "RABBITMQ_URL": via_proxy(self.infra.rabbitmq_url, self.broker_proxy.port),
            "YCLIENTS_PARTNER_TOKEN": self.partner_token,
            "YCLIENTS_APP_ID": str(APP_ID),
            "JWT_SECRET": self.jwt_secret,
            "RETRY_DELAYS_MS": "[" + ",".join(str(d) for d in self.options.retry_delays_ms) + "]",
            "OUTBOX_RELAY_INTERVAL_S": "0.5",
            "PUBLISH_TIMEOUT_S": "3",
            "YCLIENTS_TIMEOUT_S": "2",
            # A dead whatsapp worker's sessions are taken over within LEASE_S + LEASE_CHECK_S.
            "WHATSAPP_LEASE_S": "3",
            "WHATSAPP_LEASE_CHECK_S": "1",
            "SANDBOX_HANG_S": "30",
        }
        env.update(self.options.extra_env)
        return env

    async def close(self) -> None:
        """Stop everything this world started and drop its database and vhost."""
        with contextlib.suppress(Exception):
            if self.http is not None:
                await self.http.aclose()
        with contextlib.suppress(Exception):
            if self.tap is not None:
                await self.tap.close()
        with contextlib.suppress(Exception):
            if self.broker is not None:
                await self.broker.close()
        with contextlib.suppress(Exception):
            if self.engine is not None:
                await self.engine.dispose()
        if self.stack is not None:
            if self.broker_proxy is not None and self.db_proxy is not None:
                # A clean shutdown needs the broker and database reachable.
                self.broker_proxy.set_latency(0)
                self.broker_proxy.up()
                self.db_proxy.up()
            with contextlib.suppress(Exception):
                await self.terminate_all()
            await asyncio.to_thread(self.stack.stop_all)
        if self.proxies is not None:
            self.proxies.close()
        if self.infra is not None:
            infra, self.infra = self.infra, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(destroy_infra, infra)

    # -- processes ---------------------------------------------------------------------------------------
    def roles(self) -> list[str]:
        """The service roles this world runs, in start order."""
        roles = ["gateway", "registration", "activation"]
        if self.whatsapp_worker:
            roles.append("whatsapp")
        return roles

    async def start_services(self) -> None:
        """Start the sandbox and every service instance in parallel and wait until all are ready."""
        assert self.stack is not None
        stack = self.stack
        starting: list[ServiceProcess] = [stack.start("sandbox", wait=False)]
        self.procs = {"sandbox": [starting[0]]}
        for role in self.roles():
            self.procs[role] = []
            for i in range(self.options.topology.count(role)):
                port = None if i == 0 else free_port()
                proc = stack.start(role, wait=False, port=port)
                self.procs[role].append(proc)
                starting.append(proc)
        await asyncio.gather(*(asyncio.to_thread(p.wait_ready, 60) for p in starting))

    async def kill(self, role: str, index: int) -> ServiceProcess:
        """SIGKILL one instance (no cleanup at all)."""
        proc = self.procs[role][index]
        await asyncio.to_thread(proc.kill)
        return proc

    async def restart(self, role: str, index: int) -> ServiceProcess:
        """Start a dead instance again on its port and wait until it is ready."""
        assert self.stack is not None
        old = self.procs[role][index]
        fresh = self.stack.start(role, wait=False, port=old.port)
        self.procs[role][index] = fresh
        await asyncio.to_thread(fresh.wait_ready, 60)
        return fresh

    async def terminate_all(self) -> list[ExitTime]:
        """SIGTERM every service instance at once (not the sandbox) and time each exit."""
        procs = [p for role in self.roles() for p in self.procs.get(role, []) if p.proc.poll() is None]
        started = time.monotonic()
        for proc in procs:
            proc.signal(signal.SIGTERM)

        def wait_exit(proc: ServiceProcess) -> ExitTime:
            try:
                code: int | None = proc.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = None
            return ExitTime(proc.name, proc.port, time.monotonic() - started, code)

        return list(await asyncio.gather(*(asyncio.to_thread(wait_exit, p) for p in procs)))

    async def restart_all(self) -> None:
        """Start every service instance that is not running, in parallel."""
        dead = [(role, i) for role in self.roles() for i, p in enumerate(self.procs[role]) if p.proc.poll() is not None]
        await asyncio.gather(*(self.restart(role, i) for role, i in dead))

    # -- addresses and helpers ---------------------------------------------------------------------------
    def urls(self, role: str) -> list[str]:
        """Base URLs of every instance of a role."""
        return [p.url for p in self.procs.get(role, [])]

    @property
    def sandbox_url(self) -> str:
        """The sandbox (YClients stand-in)."""
        return self.procs["sandbox"][0].url

    def new_salons(self, count: int) -> list[int]:
        """Salon ids never used in this world."""
        first = self._next_salon
        self._next_salon += count
        return list(range(first, first + count))

    async def queued_messages(self) -> int:
        """Messages (ready + unacknowledged) in the work and retry queues of this world's vhost."""
        assert self.infra is not None
        proc = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            self.infra.vhost,
            "name",
            "messages",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=_RABBITMQCTL_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            raise
        total = 0
        for line in out.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                continue
            name = parts[0]
            base, _, rest = name.partition(".")
            if base in _QUEUE_NAMES and (not rest or rest.startswith("retry.")):
                total += int(parts[1])
        return total

    def log_problems(self) -> tuple[Counter[str], int]:
        """ERROR lines (or tracebacks) of our code by service and message, and how many the AMQP library wrote."""
        ours: Counter[str] = Counter()
        library = 0
        for path in sorted(Path(self.log_dir).glob("*.log")):
            service = path.stem.split("-")[1] if "-" in path.stem else path.stem
            for line in path.read_text(errors="replace").splitlines():
                if not _is_problem(line):
                    continue
                if any(f'"logger": "{lib}' in line for lib in _LIBRARY_LOGGERS):
                    library += 1
                    continue
                ours[f"{service}: {_message_of(line)}"] += 1
        return ours, library


# aio-pika and aiormq log their own reconnect callbacks at ERROR when a connection is cut.
_LIBRARY_LOGGERS = ("aio_pika", "aiormq")


def _message_of(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:120]
    return str(entry.get("msg", ""))[:120] if isinstance(entry, dict) else line[:120]


def _is_problem(line: str) -> bool:
    return line.startswith("Traceback") or '"level": "error"' in line or '"level": "critical"' in line
