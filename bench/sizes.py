"""How big each benchmark is: the full run (`make bench`) and the smoke run (`--quick`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """Durations and counts of one bench run."""

    label: str
    # B1/B2 closed-loop runs (wrk): seconds per measured run, warm-up before it, rounds per side, connections.
    duration_s: float
    warmup_s: float
    rounds: int
    connections: int
    # B2 seed comparison: open loop at this rate for this long, against both handlers.
    seed_rate: float
    seed_duration_s: float
    # B3: messages per side per round, and rounds.
    pipeline_messages: int
    pipeline_rounds: int
    # B4: salons activated.
    activation_salons: int
    # B5: sessions pairing at once.
    pairing_sessions: int


FULL = Sizes(
    label="full",
    duration_s=10,
    warmup_s=3,
    rounds=3,
    connections=32,
    seed_rate=50,
    seed_duration_s=10,
    pipeline_messages=10_000,
    pipeline_rounds=1,
    activation_salons=200,
    pairing_sessions=1_000,
)

QUICK = Sizes(
    label="quick",
    duration_s=2,
    warmup_s=1,
    rounds=1,
    connections=16,
    seed_rate=20,
    seed_duration_s=3,
    pipeline_messages=300,
    pipeline_rounds=1,
    activation_salons=15,
    pairing_sessions=30,
)
