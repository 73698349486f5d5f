"""Phone numbers for pairing by code: digits with the country code, as WhatsApp wants them."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-()+]")
_DIGITS = re.compile(r"[0-9]+")
MIN_DIGITS = 10
MAX_DIGITS = 15
MAX_INPUT_CHARS = 64


class InvalidPhone(ValueError):
    """The number cannot be used; the message is the Russian reason shown to the admin."""


def normalize_phone(raw: str) -> str:
    """Digits only (country code first), from input like `+7 (900) 123-45-67`; raises InvalidPhone with a reason."""
    text = raw.strip()
    if not text:
        raise InvalidPhone("Укажите номер телефона WhatsApp, например +7 900 123-45-67.")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidPhone("Номер слишком длинный. Укажите номер в формате +7 900 123-45-67.")
    digits = _SEPARATORS.sub("", text)
    if not _DIGITS.fullmatch(digits):
        raise InvalidPhone("В номере могут быть только цифры, пробелы, скобки, дефисы и знак «+».")
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise InvalidPhone(
            f"В номере должно быть от {MIN_DIGITS} до {MAX_DIGITS} цифр вместе с кодом страны, "
            "например +7 900 123-45-67."
        )
    # A Russian mobile written the local way (8 9xx ...) means +7 9xx ...; WhatsApp needs the country code.
    if not text.startswith("+") and len(digits) == 11 and digits.startswith("89"):
        digits = "7" + digits[1:]
    return digits
