"""Running HTTP load from a separate process: `wrk` (Debian's package) for closed loops, our generator otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import RESULT_PREFIX

ROOT = Path(__file__).resolve().parents[1]
WRK_PREFIX = "BENCH_WRK "

# wrk's `done` hook prints the exact counts and percentiles (microseconds) as one JSON line.
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


@dataclass(frozen=True)
class LoadSpec:
    """What to send: method, URL, body and headers."""

    url: str
    method: str = "GET"
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # Open loop only: paths used in turn (e.g. distinct salon ids).
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadResult:
    """Throughput and latency of one load run; `bad` counts errors and non-2xx/3xx answers."""

    tool: str
    requests: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    bad: int
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def wrk_available() -> bool:
    """True when Debian's wrk is installed."""
    return shutil.which("wrk") is not None


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script that sets the method, body and headers and reports the result."""
    lines = [f"wrk.method = {_lua_string(spec.method)}"]
    if spec.body:
        lines.append(f"wrk.body = {_lua_string(spec.body)}")
    for name, value in spec.headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    return "\n".join(lines) + "\n" + _WRK_DONE


def parse_wrk(output: str) -> LoadResult:
    """The result from wrk's output (the line our `done` hook printed)."""
    for line in output.splitlines():
        if line.startswith(WRK_PREFIX):
            data = json.loads(line[len(WRK_PREFIX) :])
            bad = sum(int(data[k]) for k in ("connect", "read", "write", "status", "timeout"))
            return LoadResult(
                tool="wrk",
                requests=int(data["requests"]),
                seconds=int(data["duration_us"]) / 1e6,
                p50_ms=int(data["p50_us"]) / 1000,
                p99_ms=int(data["p99_us"]) / 1000,
                max_ms=int(data["max_us"]) / 1000,
                bad=bad,
            )
    raise RuntimeError(f"no result in wrk output:\n{output[-2000:]}")


def run_wrk(spec: LoadSpec, *, connections: int, duration: float, threads: int = 1) -> LoadResult:
    """Closed-loop load with wrk (bounded: wrk stops after `duration`, we kill it after twice that)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(wrk_script(spec))
        script = fh.name
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, our own URL on 127.0.0.1
            [
                shutil.which("wrk") or "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "-s",
                script,
                spec.url,
            ],
            capture_output=True,
            text=True,
            timeout=duration * 2 + 15,
            check=False,
        )
    finally:
        Path(script).unlink(missing_ok=True)
    return parse_wrk(done.stdout + done.stderr)


def run_generator(spec: LoadSpec, *, connections: int, duration: float, rate: float | None = None) -> LoadResult:
    """Our Python generator as a separate process: closed loop, or open loop at `rate` per second."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        spec.url,
        "--method",
        spec.method,
        "--connections",
        str(connections),
        "--duration",
        str(duration),
    ]
    if spec.body:
        argv += ["--body", spec.body]
    for name, value in spec.headers.items():
        argv += ["--header", f"{name}: {value}"]
    if rate:
        argv += ["--rate", str(rate)]
    targets_file: str | None = None
    if spec.targets:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            fh.write("\n".join(spec.targets) + "\n")
            targets_file = fh.name
        argv += ["--targets-file", targets_file]
    try:
        done = subprocess.run(  # noqa: S603 - our own module
            argv, capture_output=True, text=True, timeout=duration * 3 + 30, check=False, cwd=ROOT
        )
    finally:
        if targets_file:
            Path(targets_file).unlink(missing_ok=True)
    return parse_generator(done.stdout, done.stderr)


def parse_generator(stdout: str, stderr: str = "") -> LoadResult:
    """The result line our generator printed."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            statuses = {str(k): int(v) for k, v in data["statuses"].items()}
            bad = int(data["errors"]) + sum(v for k, v in statuses.items() if not 200 <= int(k) < 400)
            return LoadResult(
                tool="python-generator" + (" (open loop)" if data.get("offered_rate") else ""),
                requests=int(data["requests"]),
                seconds=float(data["seconds"]),
                p50_ms=data["p50_ms"],
                p99_ms=data["p99_ms"],
                max_ms=data["max_ms"],
                bad=bad,
                statuses=statuses,
            )
    raise RuntimeError(f"no result from the load generator:\n{stdout[-1000:]}\n{stderr[-2000:]}")


def closed_load(spec: LoadSpec, *, connections: int, duration: float) -> LoadResult:
    """Closed-loop load with wrk when installed, else with our generator."""
    if wrk_available():
        return run_wrk(spec, connections=connections, duration=duration)
    return run_generator(spec, connections=connections, duration=duration)
