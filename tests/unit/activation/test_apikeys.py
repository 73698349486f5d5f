"""The api_key: 32 random bytes as hex, stored as SHA-256, checked in constant time."""

from __future__ import annotations

import hashlib

from services.activation.apikeys import hash_api_key, new_api_key, verify_api_key


def test_keys_are_32_random_bytes_in_hex_and_never_repeat() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == 64 and bytes.fromhex(k) for k in keys)


def test_the_stored_hash_is_sha256_hex_and_verifies_only_its_key() -> None:
    key = new_api_key()
    stored = hash_api_key(key)
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored
    assert verify_api_key(key, stored)
    assert not verify_api_key(new_api_key(), stored)
    assert not verify_api_key(key, None)
    assert not verify_api_key("", stored)
