"""What a benchmark produces: measured figures and checks against targets (ratios, never absolute numbers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["pass", "FAIL", "n/a"]


@dataclass(frozen=True)
class Figure:
    """One measured number."""

    name: str
    value: float | None
    unit: str
    note: str = ""


@dataclass(frozen=True)
class Check:
    """A figure compared with its target; `value` None means it could not be measured."""

    name: str
    value: float | None
    op: Literal[">=", "<="]
    target: float
    unit: str = "×"
    note: str = ""

    @property
    def verdict(self) -> Verdict:
        """pass / FAIL, or n/a when there is no value."""
        if self.value is None:
            return "n/a"
        ok = self.value >= self.target if self.op == ">=" else self.value <= self.target
        return "pass" if ok else "FAIL"

    @property
    def target_text(self) -> str:
        """The target as people write it (`≥ 0.85`)."""
        sign = "≥" if self.op == ">=" else "≤"
        return f"{sign} {fmt(self.target)}{'' if self.unit == '×' else ' ' + self.unit}"


@dataclass
class BenchResult:
    """Everything one benchmark reports."""

    key: str
    title: str
    method: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    def figure(self, name: str, value: float | None, unit: str, note: str = "") -> None:
        """Add a figure."""
        self.figures.append(Figure(name, value, unit, note))

    def check(
        self, name: str, value: float | None, op: Literal[">=", "<="], target: float, unit: str = "×", note: str = ""
    ) -> Check:
        """Add a check and return it."""
        made = Check(name, value, op, target, unit, note)
        self.checks.append(made)
        return made

    @property
    def passed(self) -> bool:
        """True when it ran and no check failed."""
        return self.error is None and self.skipped is None and all(c.verdict != "FAIL" for c in self.checks)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: `—` when missing, thousands separated, about `digits` significant digits."""
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.{digits}g}"
