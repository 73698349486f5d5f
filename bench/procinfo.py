"""Resident memory of a process and its children, from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = PROC / str(pid) / "task"
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def rss_bytes(pid: int, *, with_children: bool = True) -> int | None:
    """VmRSS of `pid` (plus its descendants); None when the process is gone."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    total = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) * 1024
            break
    if with_children:
        for child in _children(pid):
            total += rss_bytes(child) or 0
    return total


def mib(value: int | None) -> float | None:
    """Bytes as MiB."""
    return None if value is None else value / (1024 * 1024)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far; None when it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
