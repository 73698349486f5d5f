"""`make dev`: migrate, start every service and the sandbox on this machine, print the URL to click.

Runs in the foreground; Ctrl-C (or SIGTERM) stops every process gracefully.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".dev" / "logs"

# name, module, port variable, default port (DESIGN §10 fixed points)
SERVICES = [
    ("sandbox", "sandbox.yclients", "SANDBOX_PORT", 8090),
    ("gateway", "services.gateway", "GATEWAY_PORT", 8000),
    ("registration", "services.registration", "REGISTRATION_PORT", 8101),
    ("whatsapp", "services.whatsapp", "WHATSAPP_PORT", 8102),
    ("activation", "services.activation", "ACTIVATION_PORT", 8103),
]


def port_of(var: str, default: int) -> int:
    """The port a service listens on (overridable by env)."""
    return int(os.environ.get(var, default))


def ready(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URL we built)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    """Start everything, wait for readiness, print the links, and supervise until interrupted."""
    LOGS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("ENVIRONMENT", "local")
    gateway_port = port_of("GATEWAY_PORT", 8000)
    sandbox_port = port_of("SANDBOX_PORT", 8090)
    env.setdefault("BASE_URL", f"http://127.0.0.1:{gateway_port}")
    env.setdefault("YCLIENTS_API_URL", f"http://127.0.0.1:{sandbox_port}")
    env["PYTHONPATH"] = str(ROOT)

    print("→ migrating the database (created if missing)", flush=True)
    subprocess.run([sys.executable, "-m", "shared.db.migrate"], cwd=ROOT, env=env, check=True)

    procs: list[tuple[str, subprocess.Popen[bytes], str]] = []
    for name, module, var, default in SERVICES:
        log = (LOGS / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={**env, "SERVICE_NAME": name},
            stdout=log,
            stderr=log,
        )
        procs.append((name, proc, f"http://127.0.0.1:{port_of(var, default)}/readyz"))

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    deadline = time.monotonic() + 60
    pending = {name for name, _, _ in procs}
    while pending and not stopping and time.monotonic() < deadline:
        for name, proc, url in procs:
            if proc.poll() is not None:
                print(f"✗ {name} exited with {proc.returncode}; see {LOGS / (name + '.log')}", flush=True)
                stopping = True
            elif name in pending and ready(url):
                print(f"✓ {name} ready ({url})", flush=True)
                pending.discard(name)
        time.sleep(0.2)
    if pending and not stopping:
        print(f"✗ not ready after 60 s: {', '.join(sorted(pending))}; logs in {LOGS}", flush=True)

    if not stopping:
        print(
            "\nEverything is running. Open the YClients marketplace stand-in and click «Подключить»:\n"
            f"    http://127.0.0.1:{sandbox_port}/marketplace\n"
            f"Gateway health: http://127.0.0.1:{gateway_port}/marketplace/health\n"
            f"Logs: {LOGS}/<service>.log    Stop: Ctrl-C\n",
            flush=True,
        )
    while not stopping:
        for name, proc, _ in procs:
            if proc.poll() is not None:
                print(f"✗ {name} exited with {proc.returncode}; see {LOGS / (name + '.log')}", flush=True)
                stopping = True
        time.sleep(0.5)

    print("→ stopping", flush=True)
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc, _ in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in 15 s; killing", flush=True)
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
