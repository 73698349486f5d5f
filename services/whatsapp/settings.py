"""The whatsapp worker's own settings (env ``WHATSAPP_*``), next to the shared ``Settings``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WhatsAppSettings(BaseSettings):
    """Lease, reconnect policy and emulator timings; every value overridable by env (tests use short ones)."""

    model_config = SettingsConfigDict(env_prefix="WHATSAPP_", env_file=".env", extra="ignore")

    # Ownership (services/whatsapp/ownership.py): takeover after an owner's death within LEASE_S + LEASE_CHECK_S.
    LEASE_S: float = Field(10.0, gt=0)
    LEASE_CHECK_S: float = Field(2.0, gt=0)
    # Sessions one worker claims per pass, so the survivors of a dead worker share its sessions.
    CLAIM_BATCH: int = Field(200, ge=1)

    # Reconnect policy (services/whatsapp/policy.py).
    BACKOFF_BASE_S: float = Field(1.0, gt=0)
    BACKOFF_FACTOR: float = Field(2.0, ge=1)
    BACKOFF_CAP_S: float = Field(300.0, gt=0)
    BACKOFF_JITTER: float = Field(0.2, ge=0, lt=1)
    MAX_CONNECTS_PER_MINUTE: int = Field(6, ge=1)
    # A connection that held this long resets the backoff; a flapping one keeps climbing it.
    STABLE_AFTER_S: float = Field(60.0, gt=0)

    # Emulator timings (WhatsApp: the first QR lives ~60 s, each next ~20 s, 6 refs in all).
    EMULATOR_QR_FIRST_S: float = Field(60.0, gt=0)
    EMULATOR_QR_NEXT_S: float = Field(20.0, gt=0)
    EMULATOR_QR_REFS: int = Field(6, ge=1)
    # A pairing code lives as long as the whole QR attempt would, unless set.
    EMULATOR_CODE_TTL_S: float | None = Field(None, gt=0)
    # How long a scan (or a typed code) waits for the client of the attempt to confirm the pairing; unconfirmed,
    # the link is undone and the phone is told to scan again (a dead or replaced client never links a device).
    EMULATOR_CONFIRM_S: float = Field(5.0, gt=0)

    # neonize: where whatsmeow keeps its store; default: our database, schema ``whatsmeow``.
    NEONIZE_DATABASE_URL: str | None = None
    # neonize keeps one thread blocked per open client (its Go call returns only when the client stops), and
    # every other neonize call needs a free thread too: the loop's default executor is sized for this many.
    NEONIZE_MAX_CLIENTS: int = Field(1000, ge=1)

    @property
    def emulator_code_ttl_s(self) -> float:
        """How long an emulator pairing code stays valid."""
        if self.EMULATOR_CODE_TTL_S is not None:
            return self.EMULATOR_CODE_TTL_S
        return self.EMULATOR_QR_FIRST_S + (self.EMULATOR_QR_REFS - 1) * self.EMULATOR_QR_NEXT_S
