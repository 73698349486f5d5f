"""Fault switches for tests: which endpoint misbehaves, how, how often."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FaultEndpoint = Literal["company", "callback", "status", "uninstall", "salons", "payment", "update_channel", "*"]
FaultMode = Literal[
    "5xx", "timeout", "slow", "401", "404", "422", "400_aggregator", "403_installed", "429", "lost_response"
]


class FaultSpec(BaseModel):
    """The body of ``POST /__sandbox/faults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: FaultEndpoint
    mode: FaultMode
    count: int | None = Field(default=None, ge=1)
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    delay_s: float | None = Field(default=None, ge=0.0, le=3600.0)


@dataclass
class Fault:
    """An active fault; ``remaining`` None means until cleared."""

    id: int
    spec: FaultSpec
    remaining: int | None
    applied: int = 0

    def as_json(self) -> dict[str, Any]:
        """The fault as the control API shows it."""
        return {"id": self.id, **self.spec.model_dump(), "remaining": self.remaining, "applied": self.applied}


class FaultBook:
    """The active faults, applied in the order they were set."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._rng = rng or random.Random()

    def add(self, spec: FaultSpec) -> Fault:
        """Activate a fault."""
        fault = Fault(id=next(self._ids), spec=spec, remaining=spec.count)
        self._faults.append(fault)
        return fault

    def clear(self) -> int:
        """Deactivate every fault; returns how many there were."""
        count = len(self._faults)
        self._faults.clear()
        return count

    def active(self) -> list[Fault]:
        """The faults still active."""
        return list(self._faults)

    def take(self, endpoint: str) -> Fault | None:
        """The fault to apply to one call of ``endpoint`` (consuming one of its count), if any."""
        for fault in self._faults:
            if fault.spec.endpoint not in ("*", endpoint):
                continue
            probability = fault.spec.probability
            if probability is not None and self._rng.random() >= probability:
                continue
            fault.applied += 1
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault
        return None
