"""Settings for every service, read from the environment (names of the seed kept)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that ship in this file so `make dev` runs with nothing configured; production refuses them.
DEFAULT_PARTNER_TOKEN = "sandbox-partner-token"  # noqa: S105
DEFAULT_JWT_SECRET = "local-dev-jwt-secret-change-me-0123456789"  # noqa: S105
DEFAULT_YCLIENTS_API_URL = "http://127.0.0.1:8090"
MIN_SECRET_LENGTH = 32


class Settings(BaseSettings):
    """One settings object for every service; each reads what it needs."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    ENVIRONMENT: Literal["local", "test", "production"] = "local"
    SERVICE_NAME: str = "service"
    LOG_LEVEL: str = "INFO"

    YCLIENTS_PARTNER_TOKEN: SecretStr = SecretStr(DEFAULT_PARTNER_TOKEN)
    YCLIENTS_APP_ID: int = 1
    YCLIENTS_API_URL: str = DEFAULT_YCLIENTS_API_URL
    YCLIENTS_TIMEOUT_S: float = 10.0
    # The platform's limit is per IP for all our calls together (YCLIENTS.md §4).
    YCLIENTS_RATE_PER_SECOND: int = 5
    YCLIENTS_RATE_PER_MINUTE: int = 200

    JWT_SECRET: SecretStr = SecretStr(DEFAULT_JWT_SECRET)
    JWT_TTL_S: int = 3600
    BASE_URL: str = "http://127.0.0.1:8000"
    # Where the admin goes back to after activation (YClients UI).
    YCLIENTS_UI_URL: str = "https://yclients.com/"

    DATABASE_URL: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/marketplace"
    RABBITMQ_URL: str = "amqp://guest:guest@127.0.0.1:5672/"

    WHATSAPP_ENGINE: Literal["emulator", "neonize"] = "emulator"

    GATEWAY_PORT: int = 8000
    SANDBOX_PORT: int = 8090
    REGISTRATION_PORT: int = 8101
    WHATSAPP_PORT: int = 8102
    ACTIVATION_PORT: int = 8103
    BIND_HOST: str = "127.0.0.1"

    # Broker behaviour.
    PREFETCH: int = 32
    # Micro-batches (types a worker applies together): the largest batch, and how many are applied at once.
    # Such a queue's prefetch also covers one more full batch filling while these are applied.
    BATCH_MAX_SIZE: int = Field(default=32, ge=1)
    BATCH_CONCURRENCY: int = Field(default=1, ge=1)
    PUBLISH_TIMEOUT_S: float = 5.0
    RETRY_DELAYS_MS: list[int] = Field(default_factory=lambda: [1_000, 5_000, 30_000, 120_000, 600_000])
    OUTBOX_RELAY_INTERVAL_S: float = 2.0

    # Body size limit for every POST the gateway accepts.
    MAX_BODY_BYTES: int = 64 * 1024

    @property
    def batch_prefetch(self) -> int:
        """Prefetch of a queue whose messages are applied in micro-batches."""
        return max(self.PREFETCH, self.BATCH_MAX_SIZE * (self.BATCH_CONCURRENCY + 1))

    @property
    def is_production(self) -> bool:
        """True when running for real salons."""
        return self.ENVIRONMENT == "production"

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if not self.is_production:
            return self
        problems: list[str] = []
        token = self.YCLIENTS_PARTNER_TOKEN.get_secret_value()
        if not token or token == DEFAULT_PARTNER_TOKEN:
            problems.append("YCLIENTS_PARTNER_TOKEN is missing or the local default")
        jwt_secret = self.JWT_SECRET.get_secret_value()
        if jwt_secret == DEFAULT_JWT_SECRET or len(jwt_secret) < MIN_SECRET_LENGTH:
            problems.append(f"JWT_SECRET is the local default or shorter than {MIN_SECRET_LENGTH} characters")
        api = urlsplit(self.YCLIENTS_API_URL)
        if api.scheme != "https" or api.hostname in {"127.0.0.1", "localhost", "sandbox"}:
            problems.append("YCLIENTS_API_URL points at the sandbox, not at https://api.yclients.com")
        if self.WHATSAPP_ENGINE == "emulator":
            problems.append("WHATSAPP_ENGINE=emulator is for local runs and tests only")
        if not self.BASE_URL.startswith("https://"):
            problems.append("BASE_URL must be the public https:// address YClients calls")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    def secret_values(self) -> list[str]:
        """Every secret this process knows, for the log redactor."""
        return [s for s in (self.YCLIENTS_PARTNER_TOKEN.get_secret_value(), self.JWT_SECRET.get_secret_value()) if s]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
