"""Salon and application ids in request bodies: what each caller may send, validated as documented."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict, WithJsonSchema

from shared.tokens import MAX_SALON_ID

# 15 digits stay below MAX_SALON_ID (2**53), so every string the pattern admits is in range.
_ID_TEXT = re.compile(r"[1-9][0-9]{0,14}")
_INTEGER_ID = {"type": "integer", "minimum": 1, "maximum": MAX_SALON_ID}
_YCLIENTS_ID_SCHEMA = {"anyOf": [_INTEGER_ID, {"type": "string", "pattern": "^[1-9][0-9]{0,14}$"}]}


def _yclients_id(value: Any) -> Any:
    """YClients documents ids as JSON numbers; a digit string is taken too (PHP platforms send both), never a bool."""
    if isinstance(value, bool):
        raise ValueError("an id is a positive integer, not a boolean")
    if isinstance(value, str):
        if not _ID_TEXT.fullmatch(value):
            raise ValueError("an id is a positive integer")
        return int(value)
    return value


YClientsId = Annotated[
    int, BeforeValidator(_yclients_id), Field(gt=0, le=MAX_SALON_ID), WithJsonSchema(_YCLIENTS_ID_SCHEMA)
]
"""An id in a YClients webhook: a positive integer (or its digits as a string)."""

PageSalonId = Annotated[int, Strict(), Field(gt=0, le=MAX_SALON_ID)]
"""A salon id sent by the onboarding page's own script: a JSON integer, nothing else."""
