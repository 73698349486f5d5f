"""WhatsApp's shapes as the emulator produces them: QR payloads, pairing codes, phone numbers."""

from __future__ import annotations

import base64

from services.whatsapp.emulator.protocol import (
    PAIRING_ALPHABET,
    QR_LINK_PREFIX,
    ClientKeys,
    default_phone,
    format_pairing_code,
    is_qr_payload,
    new_pairing_code,
    new_ref,
    normalize_pairing_code,
    normalize_phone,
    unwrap_qr,
)


def test_qr_payload_is_ref_noise_identity_adv() -> None:
    keys = ClientKeys.generate()
    payload = keys.qr_payload(new_ref())
    ref, noise, identity, adv = payload.split(",")
    assert ref.startswith("2@")
    for part in (noise, identity, adv):
        assert len(base64.b64decode(part, validate=True)) == 32
    assert base64.b64decode(noise) == keys.noise_pub
    assert base64.b64decode(identity) == keys.identity_pub
    assert base64.b64decode(adv) == keys.adv_secret
    assert is_qr_payload(payload)


def test_refs_are_random_and_keys_are_stable_per_attempt() -> None:
    keys = ClientKeys.generate()
    a, b = keys.qr_payload(new_ref()), keys.qr_payload(new_ref())
    assert a.split(",")[0] != b.split(",")[0]
    assert a.split(",")[1:] == b.split(",")[1:]
    assert ClientKeys.generate().qr_payload("2@x" * 10).split(",")[1:] != a.split(",")[1:]


def test_shape_check_rejects_what_is_not_a_payload() -> None:
    assert not is_qr_payload("hello")
    assert not is_qr_payload("2@abc,def")
    payload = ClientKeys.generate().qr_payload(new_ref())
    assert not is_qr_payload(payload + ",extra")


def test_the_wa_me_link_form_is_unwrapped() -> None:
    payload = ClientKeys.generate().qr_payload(new_ref())
    assert unwrap_qr(QR_LINK_PREFIX + payload) == payload
    assert unwrap_qr(f"  {payload}\n") == payload


def test_pairing_codes_use_whatsapps_alphabet_and_are_shown_with_a_dash() -> None:
    codes = {new_pairing_code() for _ in range(200)}
    assert len(codes) > 190
    for code in codes:
        assert len(code) == 8
        assert set(code) <= set(PAIRING_ALPHABET)
    assert not set("0OIU") & set(PAIRING_ALPHABET)
    assert format_pairing_code("ABCDEFGH") == "ABCD-EFGH"


def test_typed_codes_are_normalised() -> None:
    assert normalize_pairing_code("abcd-efgh") == "ABCDEFGH"
    assert normalize_pairing_code(" ABCD EFGH ") == "ABCDEFGH"
    assert normalize_pairing_code("ABCD-EFG") is None
    assert normalize_pairing_code("ABCD-EFG0") is None  # 0 is not in WhatsApp's alphabet


def test_phone_numbers_are_digits_with_country_code() -> None:
    assert normalize_phone("+7 (916) 123-45-67") == "79161234567"
    assert normalize_phone("79161234567") == "79161234567"
    assert normalize_phone("12345") is None
    assert normalize_phone("0916123456") is None
    assert normalize_phone("7916abc4567") is None
    assert default_phone("company_42") == "79990000042"
