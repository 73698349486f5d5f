"""Sampling profiles of the services under load with py-spy, summarised as where the CPU time went."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r"(?:site|dist)-packages/(?P<pkg>[A-Za-z0-9_]+)")
_STDLIB = re.compile(r"/python3\.\d+/(?P<mod>[A-Za-z0-9_]+)")


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def package_of(path: str, root: str) -> str:
    """Where a frame's code lives: a third-party package, a stdlib module, or our own module."""
    if (site := _SITE.search(path)) is not None:
        return site.group("pkg")
    if path.startswith(root):
        rel = path[len(root) :].lstrip("/")
        parts = rel.removesuffix(".py").split("/")
        return ".".join(parts[:2]) if parts and parts[0] in ("services", "shared", "sandbox", "bench") else rel
    if (std := _STDLIB.search(path)) is not None:
        return f"stdlib {std.group('mod')}"
    return path or "?"


@dataclass(frozen=True)
class ProfileSummary:
    """Samples of one profile: total, by package (self time), top functions (self and inclusive)."""

    label: str
    samples: int
    expected: int
    by_package: list[tuple[str, float]]
    top_self: list[tuple[str, float]]
    top_total: list[tuple[str, float]]

    @property
    def busy(self) -> float | None:
        """Fraction of the samples where a thread was running Python (not idle)."""
        return self.samples / self.expected if self.expected else None

    def markdown(self, limit: int = 12) -> list[str]:
        """The summary as Markdown lines."""
        busy = f"{self.busy:.0%} of samples busy" if self.busy is not None else ""
        out = [f"### {self.label}", "", f"{self.samples} samples ({busy}).", "", "Self time by package:", ""]
        out += [f"- {pct:5.1f}% {name}" for name, pct in self.by_package[:limit]]
        out += ["", "Top functions, self time:", ""]
        out += [f"- {pct:5.1f}% `{name}`" for name, pct in self.top_self[:limit]]
        out += ["", "Top functions, inclusive:", ""]
        out += [f"- {pct:5.1f}% `{name}`" for name, pct in self.top_total[:limit]]
        return [*out, ""]


def summarise(raw: str, *, label: str, root: str, expected: int = 0) -> ProfileSummary:
    """Summarise py-spy's raw (collapsed stacks) output."""
    self_pkg: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame.strip())
            if match is not None:
                frames.append((match.group("func"), match.group("path")))
        if not frames:
            continue
        func, path = frames[-1]
        pkg = package_of(path, root)
        self_pkg[pkg] += count
        self_fn[f"{pkg}: {func}"] += count
        for name in {f"{package_of(p, root)}: {f}" for f, p in frames}:
            total_fn[name] += count

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100 * v / samples) for k, v in counter.most_common()] if samples else []

    inclusive = [(name, share) for name, share in pct(total_fn) if not _plumbing(name)]
    return ProfileSummary(label, samples, expected, pct(self_pkg), pct(self_fn), inclusive)


def _plumbing(name: str) -> bool:
    """Frames every sample passes through (interpreter start, the event loop itself): no information."""
    pkg, _, func = name.partition(": ")
    return (
        pkg.startswith("<frozen")
        or func in ("<module>", "main")
        or (
            pkg == "stdlib asyncio"
            and func.split(".")[-1] in ("run", "run_forever", "_run_once", "run_until_complete", "_run")
        )
        or name in ("shared.runtime: run_until_signalled", "shared.worker: worker_main")
    )


class Profiler:
    """Records one process at a time with py-spy (raw collapsed stacks, no line numbers)."""

    def __init__(self, out_dir: Path, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.rate = rate

    def start(self, pid: int, name: str, duration_s: float = 0) -> tuple[subprocess.Popen[bytes], Path] | None:
        """Start sampling `pid` for `duration_s` (0: until `finish(stop=True)`); None without py-spy."""
        exe = py_spy()
        if exe is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{name}.txt"
        argv = [
            exe,
            "record",
            "--pid",
            str(pid),
            *(["--duration", str(max(1, round(duration_s)))] if duration_s else []),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--full-filenames",
            "--nolineno",
            "--nonblocking",
            "--output",
            str(path),
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        return proc, path

    def finish(
        self,
        started: tuple[subprocess.Popen[bytes], Path] | None,
        *,
        label: str,
        root: str,
        duration_s: float,
        stop: bool = False,
    ) -> ProfileSummary | None:
        """Wait for the recording (or end it now with `stop`) and summarise it."""
        if started is None:
            return None
        proc, path = started
        if stop:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return None
        if not path.exists():
            return None
        return summarise(path.read_text(errors="replace"), label=label, root=root, expected=int(duration_s * self.rate))
