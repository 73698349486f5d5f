"""What machine a bench ran on: CPU, memory, versions, and how busy it was."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _run(argv: list[str]) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        return "not installed"
    try:
        done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "unknown"


def cpu_model() -> str:
    """The CPU model name."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_total() -> str:
    """Total RAM in GiB."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def load_average() -> str:
    """The 1/5/15-minute load averages."""
    parts = _read("/proc/loadavg").split()
    return " ".join(parts[:3]) if parts else "unknown"


def git_revision(root: Path) -> str:
    """The commit checked out, and whether the tree has changes (read-only git calls)."""
    head = _run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    git = shutil.which("git")
    if git is None:
        return head
    dirty = subprocess.run(  # noqa: S603 - read-only
        [git, "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    return f"{head}{' with uncommitted changes' if dirty else ''}"


def describe(root: Path, postgres: str) -> dict[str, str]:
    """Everything the report lists about the machine."""
    return {
        "CPU": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "memory": memory_total(),
        "kernel": platform.release(),
        "Python": sys.version.split()[0],
        "PostgreSQL": postgres,
        "RabbitMQ": _run(["rabbitmqctl", "version"]),
        "load generator": _run(["wrk", "--version"]) if shutil.which("wrk") else "python generator (wrk not installed)",
        "load average at start": load_average(),
        "code": git_revision(root),
    }
