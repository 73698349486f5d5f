"""Services started as real processes (`python -m ...`) on free ports, with their logs kept for review."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"

MODULES = {
    "gateway": "services.gateway",
    "registration": "services.registration",
    "whatsapp": "services.whatsapp",
    "activation": "services.activation",
    "sandbox": "sandbox.yclients",
}
PORT_ENV = {
    "gateway": "GATEWAY_PORT",
    "registration": "REGISTRATION_PORT",
    "whatsapp": "WHATSAPP_PORT",
    "activation": "ACTIVATION_PORT",
    "sandbox": "SANDBOX_PORT",
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """One running service process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL of its HTTP port."""
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until `/readyz` (the sandbox: `/healthz`) answers 200, or fail with the log tail."""
        path = "/healthz" if self.name == "sandbox" else "/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        """Send a signal to the process."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the process dies without any cleanup."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after `timeout`)."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of its log."""
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class Stack:
    """A set of services sharing one environment; each service gets a free port."""

    env: dict[str, str]
    log_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    running: list[ServiceProcess] = field(default_factory=list)
    _count: int = 0

    def __post_init__(self) -> None:
        for name in MODULES:
            self.ports.setdefault(name, free_port())
        self.env = {
            **self.env,
            **{PORT_ENV[n]: str(p) for n, p in self.ports.items()},
            "BASE_URL": f"http://127.0.0.1:{self.ports['gateway']}",
            "YCLIENTS_API_URL": f"http://127.0.0.1:{self.ports['sandbox']}",
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def url(self, name: str) -> str:
        """Base URL of a service."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, *, wait: bool = True, port: int | None = None, **env: str) -> ServiceProcess:
        """Start `python -m <module>` for a service (another instance if `port` is given)."""
        self._count += 1
        port = port or self.ports[name]
        log_path = self.log_dir / f"{self._count:02d}-{name}-{port}.log"
        full_env = {**os.environ, **self.env, PORT_ENV[name]: str(port), "SERVICE_NAME": name, **env}
        full_env["PYTHONPATH"] = str(ROOT)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULES[name]],
                cwd=ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = ServiceProcess(name, port, proc, log_path)
        self.running.append(service)
        if wait:
            service.wait_ready()
        return service

    def stop_all(self) -> None:
        """SIGTERM every process still running."""
        for service in reversed(self.running):
            if service.proc.poll() is None:
                service.stop()


@contextmanager
def running_stack(env: dict[str, str], label: str) -> Iterator[Stack]:
    """A stack whose processes are stopped when the block ends."""
    stack = Stack(env=dict(env), log_dir=OUTPUT / "logs" / label)
    try:
        yield stack
    finally:
        stack.stop_all()
