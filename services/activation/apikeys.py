"""The api_key YClients authenticates with when it calls us (YCLIENTS.md §6): created here, stored only as a hash.

SHA-256 (hex) and not a slow or keyed hash: the key is 32 random bytes, so there is nothing to brute-force and
no pepper to manage; the hash only has to make a database leak useless, and SHA-256 does that for 256-bit
secrets. A request carrying the key is checked by hashing it and comparing in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_BYTES = 32


def new_api_key() -> str:
    """A fresh api_key: 32 random bytes as 64 hex characters."""
    return secrets.token_hex(API_KEY_BYTES)


def hash_api_key(api_key: str) -> str:
    """The stored form of a key: SHA-256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def verify_api_key(presented: str, stored_hash: str | None) -> bool:
    """True when `presented` is the key whose hash is stored (constant-time compare)."""
    if not presented or not stored_hash:
        return False
    return hmac.compare_digest(hash_api_key(presented).encode("ascii"), stored_hash.encode("ascii"))
