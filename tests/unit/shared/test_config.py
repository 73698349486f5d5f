"""Production refuses unsafe settings; local runs work with nothing configured."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import DEFAULT_JWT_SECRET, Settings

SAFE = {
    "ENVIRONMENT": "production",
    "YCLIENTS_PARTNER_TOKEN": "real-partner-token-9f8e7d6c",
    "JWT_SECRET": "a-long-random-production-secret-42",
    "YCLIENTS_API_URL": "https://api.yclients.com",
    "WHATSAPP_ENGINE": "neonize",
    "BASE_URL": "https://ai-admin.example",
}


def test_local_defaults_need_no_configuration() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.ENVIRONMENT == "local"
    assert settings.JWT_SECRET.get_secret_value() == DEFAULT_JWT_SECRET


def test_production_with_real_values_starts() -> None:
    assert Settings(_env_file=None, **SAFE).is_production  # type: ignore[arg-type, call-arg]


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"YCLIENTS_PARTNER_TOKEN": "sandbox-partner-token"}, "YCLIENTS_PARTNER_TOKEN"),
        ({"YCLIENTS_PARTNER_TOKEN": ""}, "YCLIENTS_PARTNER_TOKEN"),
        ({"JWT_SECRET": DEFAULT_JWT_SECRET}, "JWT_SECRET"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"YCLIENTS_API_URL": "http://127.0.0.1:8090"}, "sandbox"),
        ({"WHATSAPP_ENGINE": "emulator"}, "emulator"),
        ({"BASE_URL": "http://127.0.0.1:8000"}, "BASE_URL"),
    ],
)
def test_production_refuses_unsafe_values(override: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(_env_file=None, **{**SAFE, **override})  # type: ignore[arg-type, call-arg]


def test_secrets_are_not_in_the_repr() -> None:
    settings = Settings(_env_file=None, **SAFE)  # type: ignore[arg-type, call-arg]
    assert "real-partner-token-9f8e7d6c" not in repr(settings)
    assert set(settings.secret_values()) == {SAFE["YCLIENTS_PARTNER_TOKEN"], SAFE["JWT_SECRET"]}
