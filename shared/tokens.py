"""Install-redirect parsing (user_data, its signature, salon ids) and the onboarding JWT (YCLIENTS.md §1)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

import jwt
from pydantic import SecretStr

from shared.messages import MarketplaceUser

JWT_ISSUER = "yclients-whatsapp-marketplace"
JWT_AUDIENCE = "onboarding"
JWT_ALGORITHM = "HS256"
MAX_SALON_IDS = 50
MAX_SALON_ID = 2**53
# Far above any real user_data (a few hundred bytes); bounds the work an attacker can cause.
MAX_USER_DATA_CHARS = 16_384
MAX_TOKEN_CHARS = 4_096
# A token issued a little "in the future" by a host with a skewed clock is still accepted.
IAT_LEEWAY_S = 30

_STANDARD_ONLY = frozenset("+/")
_URLSAFE_ONLY = frozenset("-_")
_HEX_SIGN = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_INDEXED_KEY = re.compile(r"salon_ids\[[0-9]{1,4}\]")


class InvalidUserData(ValueError):
    """``user_data`` is not base64 of a JSON object."""


class InvalidSignature(ValueError):
    """``user_data_sign`` is missing or does not match."""


class InvalidSalonId(ValueError):
    """The salon ids of an install redirect are missing or malformed."""


class TokenError(ValueError):
    """The onboarding token cannot be used."""


class ExpiredToken(TokenError):
    """The onboarding token is past its expiry."""


class InvalidToken(TokenError):
    """The onboarding token is malformed, forged, or not meant for onboarding."""


# ---- user_data ------------------------------------------------------------------------------------------


def decode_user_data(user_data: str) -> bytes:
    """Decode base64 in either alphabet, with or without padding, a '+' sent as ' ' tolerated."""
    if not user_data:
        raise InvalidUserData("user_data is empty")
    if len(user_data) > MAX_USER_DATA_CHARS:
        raise InvalidUserData("user_data is too long")
    text = user_data.replace(" ", "+")
    chars = set(text)
    if chars & _STANDARD_ONLY and chars & _URLSAFE_ONLY:
        raise InvalidUserData("user_data mixes the standard and URL-safe base64 alphabets")
    body = text.rstrip("=")
    given_padding = len(text) - len(body)
    if len(body) % 4 == 1:
        raise InvalidUserData("user_data has an impossible base64 length")
    needed_padding = -len(body) % 4
    if given_padding not in (0, needed_padding):
        raise InvalidUserData("user_data has wrong base64 padding")
    normalised = body.translate(str.maketrans("-_", "+/")) + "=" * needed_padding
    try:
        return base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUserData("user_data is not valid base64") from None


def encode_user_data(raw: bytes, *, urlsafe: bool = False, padding: bool = True) -> str:
    """Encode bytes as base64 text the way YClients may send it."""
    text = (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode("ascii")
    return text if padding else text.rstrip("=")


def sign_user_data(raw: bytes, partner_token: str) -> str:
    """Lowercase hex HMAC-SHA256 of the decoded user_data bytes, keyed with the partner token."""
    return hmac.new(partner_token.encode("utf-8"), raw, hashlib.sha256).hexdigest()


def verify_user_data(user_data: str, user_data_sign: str | None, partner_token: SecretStr) -> MarketplaceUser:
    """Check the signature over the decoded bytes and read the marketplace user from them."""
    token = partner_token.get_secret_value()
    if not token:
        raise InvalidSignature("the partner token is not configured")
    sign = (user_data_sign or "").strip()
    if not sign:
        raise InvalidSignature("user_data_sign is missing")
    if not _HEX_SIGN.fullmatch(sign):
        raise InvalidSignature("user_data_sign is not a hex HMAC-SHA256")
    raw = decode_user_data(user_data)
    expected = sign_user_data(raw, token)
    if not hmac.compare_digest(expected.encode("ascii"), sign.lower().encode("ascii")):
        raise InvalidSignature("user_data_sign does not match user_data")
    try:
        parsed: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidUserData("user_data is not UTF-8 JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidUserData("user_data is not a JSON object")
    user_id = _text(parsed.get("id"))
    if user_id is None:
        user_id = _text(parsed.get("user_id"))
    return MarketplaceUser(
        id=user_id,
        name=_text(parsed.get("name")),
        phone=_text(parsed.get("phone")),
        email=_text(parsed.get("email")),
    )


def _text(value: Any) -> str | None:
    # Phones and ids arrive as numbers or strings depending on the YClients version.
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    return None


# ---- salon ids ------------------------------------------------------------------------------------------


def parse_salon_ids(items: Sequence[tuple[str, str]]) -> list[int]:
    """Salon ids from raw query items: ``salon_id``, ``salon_ids[]`` (repeated) or ``salon_ids[N]``."""
    values = [value for key, value in items if _is_salon_key(key)]
    if not values:
        raise InvalidSalonId("no salon id in the request")
    if len(values) > MAX_SALON_IDS:
        raise InvalidSalonId(f"more than {MAX_SALON_IDS} salon ids")
    ids: list[int] = []
    for value in values:
        salon_id = _salon_id(value)
        if salon_id not in ids:
            ids.append(salon_id)
    return ids


def _is_salon_key(key: str) -> bool:
    # A bare repeated ``salon_ids`` is not documented, but costs nothing to accept ([open]: be liberal).
    return key in ("salon_id", "salon_ids[]", "salon_ids") or _INDEXED_KEY.fullmatch(key) is not None


def _salon_id(value: str) -> int:
    text = value.strip()
    if not text:
        raise InvalidSalonId("empty salon id")
    if not _DIGITS.fullmatch(text):
        raise InvalidSalonId("salon id is not a positive integer")
    salon_id = int(text)
    if salon_id <= 0:
        raise InvalidSalonId("salon id must be positive")
    if salon_id > MAX_SALON_ID:
        raise InvalidSalonId("salon id is too large")
    return salon_id


# ---- onboarding JWT -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnboardingClaims:
    """What an onboarding token grants: the salons of one install redirect, until ``expires_at``."""

    salon_ids: list[int]
    user_id: str | None
    expires_at: datetime


def issue_onboarding_token(
    salon_ids: list[int],
    *,
    secret: SecretStr,
    ttl_s: int = 3600,
    user_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """Sign an HS256 onboarding token for the salons of one install redirect."""
    key = secret.get_secret_value()
    if not key:
        raise ValueError("the JWT secret is empty")
    if not salon_ids or not all(_valid_salon_id(s) for s in salon_ids) or len(salon_ids) > MAX_SALON_IDS:
        raise ValueError("salon_ids must be 1 to 50 positive integers")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    issued = _utc(now)
    claims: dict[str, Any] = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": str(salon_ids[0]),
        "salon_ids": list(salon_ids),
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl_s)).timestamp()),
    }
    if user_id is not None:
        claims["uid"] = user_id
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM)


def read_onboarding_token(token: str, *, secret: SecretStr, now: datetime | None = None) -> OnboardingClaims:
    """Verify an onboarding token (HS256 only, issuer and audience checked) and return its claims."""
    key = secret.get_secret_value()
    if not key:
        raise InvalidToken("the JWT secret is empty")
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("token is empty or too long")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            audience=JWT_AUDIENCE,
            issuer=JWT_ISSUER,
            # Time claims are checked below against ``now`` (PyJWT only knows the wall clock).
            options={
                "require": ["iss", "aud", "sub", "iat", "exp"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"token refused: {type(exc).__name__}") from None
    exp, iat = claims.get("exp"), claims.get("iat")
    if not _is_int(exp) or not _is_int(iat):
        raise InvalidToken("exp and iat must be integers")
    current = _utc(now).timestamp()
    if iat > current + IAT_LEEWAY_S:
        raise InvalidToken("token issued in the future")
    if current >= exp:
        raise ExpiredToken("token expired")
    salon_ids = claims.get("salon_ids")
    if (
        not isinstance(salon_ids, list)
        or not salon_ids
        or len(salon_ids) > MAX_SALON_IDS
        or not all(_valid_salon_id(s) for s in salon_ids)
    ):
        raise InvalidToken("salon_ids claim is malformed")
    if claims.get("sub") != str(salon_ids[0]):
        raise InvalidToken("sub does not match salon_ids")
    uid = claims.get("uid")
    if uid is not None and not isinstance(uid, str):
        raise InvalidToken("uid claim is malformed")
    return OnboardingClaims(
        salon_ids=[int(s) for s in salon_ids], user_id=uid, expires_at=datetime.fromtimestamp(exp, UTC)
    )


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_salon_id(value: Any) -> bool:
    return _is_int(value) and 0 < value <= MAX_SALON_ID
