"""The faults a scenario injects: outages of the broker or the database (through the proxy, or for real), and
the sandbox's YClients fault switch.

The proxy variants cut only this run's services off; the real ones (`--real-broker-stop`, `--real-db-restart`)
stop the machine's RabbitMQ application or PostgreSQL cluster, which every other test on the machine uses.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from chaos.proxy import ProxyHandle
from chaos.world import World

log = logging.getLogger(__name__)
_COMMAND_TIMEOUT_S = 120.0
PG_CONF_DIR = Path("/etc/postgresql")


class Outage(Protocol):
    """Something that goes away at `begin` and comes back at `end`."""

    description: str

    async def begin(self) -> None:
        """Make it unreachable."""

    async def end(self) -> None:
        """Bring it back (returns once it answers again)."""


class ProxyOutage:
    """The services lose their connections through the proxy and cannot open new ones."""

    def __init__(self, proxy: ProxyHandle, what: str) -> None:
        self.proxy = proxy
        self.description = f"{what} cut off through the TCP proxy (connections closed, new ones refused)"

    async def begin(self) -> None:
        """Cut every connection and refuse new ones."""
        self.proxy.down()

    async def end(self) -> None:
        """Accept connections again."""
        self.proxy.up()


async def run_command(*argv: str) -> None:
    """Run a command, failing on a non-zero exit or after two minutes."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=_COMMAND_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}: {out.decode(errors='replace')[-500:]}")


class RealBrokerStop:
    """`rabbitmqctl stop_app` / `start_app`: the real broker, for everyone on this machine."""

    description = "RabbitMQ application stopped for real (`rabbitmqctl stop_app` … `start_app`)"

    async def begin(self) -> None:
        """Stop the RabbitMQ application (the Erlang node keeps running)."""
        await run_command("rabbitmqctl", "-q", "stop_app")

    async def end(self) -> None:
        """Start it again and wait until it serves."""
        await run_command("rabbitmqctl", "-q", "start_app")
        await run_command("rabbitmqctl", "-q", "await_startup")


def pg_cluster() -> tuple[str, str]:
    """The local PostgreSQL cluster (version, name) as Debian's pg_ctlcluster names it."""
    versions = sorted((p.name for p in PG_CONF_DIR.iterdir() if p.is_dir()), key=lambda v: float(v))
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1], "main"


class RealDbRestart:
    """`pg_ctlcluster --mode fast … stop` / `start`: the real database, for everyone on this machine."""

    description = "PostgreSQL stopped and started for real (`pg_ctlcluster --mode fast … stop` … `start`)"

    async def begin(self) -> None:
        """Stop the cluster (fast: open transactions are rolled back, connections dropped)."""
        version, name = pg_cluster()
        await run_command("pg_ctlcluster", "--skip-systemctl-redirect", "--mode", "fast", version, name, "stop")

    async def end(self) -> None:
        """Start the cluster again."""
        version, name = pg_cluster()
        await run_command("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start")


async def hold_outage(outage: Outage, seconds: float) -> None:
    """Begin the outage, keep it `seconds`, end it (always)."""
    log.info("outage: %s for %.0f s", outage.description, seconds)
    await outage.begin()
    try:
        await asyncio.sleep(seconds)
    finally:
        await outage.end()


async def add_sandbox_fault(world: World, **spec: Any) -> None:
    """Switch a YClients fault on in the sandbox (`POST /__sandbox/faults`)."""
    assert world.http is not None
    response = await world.http.post(f"{world.sandbox_url}/__sandbox/faults", json=spec)
    response.raise_for_status()


async def clear_sandbox_faults(world: World) -> None:
    """Switch every YClients fault off."""
    assert world.http is not None
    response = await world.http.delete(f"{world.sandbox_url}/__sandbox/faults")
    response.raise_for_status()
