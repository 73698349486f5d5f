"""The shapes WhatsApp uses towards a client: QR payloads, refs, pairing codes, linked-device ids.

- QR text: ``ref,<noise public key b64>,<identity public key b64>,<adv secret b64>``; the keys are the client's
  own and stay the same across the refs of one attempt; only the ref changes. Recent clients wrap it as
  ``https://wa.me/settings/linked_devices#<payload>``; a scan accepts both.
- Pairing code: 8 characters of WhatsApp's alphabet (Crockford-like, without 0, I, O, U), shown ``ABCD-EFGH``.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

PAIRING_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
PAIRING_CODE_LENGTH = 8
QR_LINK_PREFIX = "https://wa.me/settings/linked_devices#"
_PAYLOAD_RE = re.compile(r"^2@[A-Za-z0-9+/=]{20,},[A-Za-z0-9+/]{43}=,[A-Za-z0-9+/]{43}=,[A-Za-z0-9+/]{43}=$")
_PHONE_RE = re.compile(r"^[1-9][0-9]{7,14}$")


def b64(data: bytes) -> str:
    """Standard base64 text, as WhatsApp puts keys in the QR."""
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class ClientKeys:
    """The client's own keys for one pairing attempt (the emulator has no curve math: random 32-byte keys)."""

    noise_priv: bytes
    noise_pub: bytes
    identity_priv: bytes
    identity_pub: bytes
    adv_secret: bytes

    @classmethod
    def generate(cls) -> ClientKeys:
        """Fresh keys."""
        return cls(*(secrets.token_bytes(32) for _ in range(5)))

    @property
    def identity_pub_b64(self) -> str:
        """The identity public key as it appears in the QR."""
        return b64(self.identity_pub)

    def qr_payload(self, ref: str) -> str:
        """The QR text for ``ref``."""
        return f"{ref},{b64(self.noise_pub)},{b64(self.identity_pub)},{b64(self.adv_secret)}"


def new_ref() -> str:
    """A server ref, like ``2@<random base64>``."""
    return "2@" + b64(secrets.token_bytes(48))


def is_qr_payload(text: str) -> bool:
    """True when ``text`` has the shape of a WhatsApp QR payload."""
    return bool(_PAYLOAD_RE.match(text))


def unwrap_qr(text: str) -> str:
    """The bare payload of a scanned QR (the ``wa.me`` link form unwrapped)."""
    text = text.strip()
    return text[len(QR_LINK_PREFIX) :] if text.startswith(QR_LINK_PREFIX) else text


def new_pairing_code() -> str:
    """A random 8-character pairing code (no dash)."""
    return "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(PAIRING_CODE_LENGTH))


def format_pairing_code(code: str) -> str:
    """``ABCDEFGH`` → ``ABCD-EFGH``."""
    half = PAIRING_CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_pairing_code(text: str) -> str | None:
    """What a person typed (any case, dashes, spaces) → the 8-character code, or None when it can't be one."""
    code = re.sub(r"[\s-]", "", text).upper()
    if len(code) != PAIRING_CODE_LENGTH or any(c not in PAIRING_ALPHABET for c in code):
        return None
    return code


def normalize_phone(text: str) -> str | None:
    """A phone number as WhatsApp wants it (digits with country code, no ``+``), or None when invalid."""
    digits = re.sub(r"[\s()+-]", "", text)
    return digits if _PHONE_RE.match(digits) else None


def default_phone(session_id: str) -> str:
    """The phone number the emulated phone answers with when a test doesn't name one: ``7999`` + salon id."""
    digits = "".join(c for c in session_id if c.isdigit())[-7:]
    return "7999" + digits.rjust(7, "0")


def new_device_id() -> int:
    """The device number of a new linked device (the ``:N`` in ``79990000001:N@s.whatsapp.net``)."""
    return 2 + secrets.randbelow(60)
