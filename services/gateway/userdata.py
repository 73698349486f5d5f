"""The marketplace user of an install, made storable before it travels on."""

from __future__ import annotations

import re

from shared.messages import MarketplaceUser

# The sizes of `companies.marketplace_user_*` (shared/db/models.py). A longer value, or a NUL byte (PostgreSQL
# text cannot hold one), would make the registration worker fail on every delivery and the salon never register.
FIELD_LIMITS = {"id": 255, "name": 255, "phone": 64, "email": 255}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def storable_user(user: MarketplaceUser) -> MarketplaceUser:
    """The user with control characters removed and each field cut to its column (an empty field becomes None)."""
    fields: dict[str, str | None] = {}
    for name, limit in FIELD_LIMITS.items():
        value: str | None = getattr(user, name)
        if value is not None:
            value = _CONTROL.sub("", value)[:limit].strip() or None
        fields[name] = value
    return MarketplaceUser(**fields)
