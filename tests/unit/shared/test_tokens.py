"""user_data decoding and signature, salon-id parsing, and the onboarding JWT (YCLIENTS.md §1)."""

from __future__ import annotations

import base64
import json
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from shared.tokens import (
    JWT_AUDIENCE,
    JWT_ISSUER,
    ExpiredToken,
    InvalidSalonId,
    InvalidSignature,
    InvalidToken,
    InvalidUserData,
    OnboardingClaims,
    TokenError,
    decode_user_data,
    encode_user_data,
    issue_onboarding_token,
    parse_salon_ids,
    read_onboarding_token,
    sign_user_data,
    verify_user_data,
)

VECTOR_TOKEN = "2t6u73mrh85btb8wgyfj"
VECTOR_BYTES = ('{"user_id":123,"name":"Андрей Иванов","email":"andrey@example.com","phone":"79990009900"}').encode()
VECTOR_SIGN = "4c4e4694660399173ce165d761e59dd8da341cf0bb04673db21f28bb4153e950"
PARTNER = SecretStr(VECTOR_TOKEN)
JWT_SECRET = SecretStr("unit-test-jwt-secret-0123456789abcdef")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def compact(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


PRODUCTION_BYTES = compact(
    {
        "id": 4242,
        "name": "Ольга Кузнецова",
        "phone": "79006464263",
        "email": "olga@example.ru",
        "is_approved": True,
        "avatar": "https://assets.yclients.com/general/0/0.png",
        "salon_name": "Салон «Ёлка»",
    }
)


# ---- the checked vector ---------------------------------------------------------------------------------


def test_checked_vector_signature() -> None:
    assert sign_user_data(VECTOR_BYTES, VECTOR_TOKEN) == VECTOR_SIGN


def test_checked_vector_through_verify_with_standard_base64() -> None:
    user_data = base64.b64encode(VECTOR_BYTES).decode()
    user = verify_user_data(user_data, VECTOR_SIGN, PARTNER)
    assert user.id == "123"
    assert user.name == "Андрей Иванов"
    assert user.email == "andrey@example.com"
    assert user.phone == "79990009900"


def test_uppercase_hex_sign_is_accepted() -> None:
    user_data = base64.b64encode(VECTOR_BYTES).decode()
    assert verify_user_data(user_data, VECTOR_SIGN.upper(), PARTNER).id == "123"


# ---- alphabets and padding ------------------------------------------------------------------------------


def _needs_both_special_chars() -> bytes:
    # Bytes whose base64 has '+' and '/' (standard) or '-' and '_' (URL-safe), and needs padding.
    raw = b"\xfb\xef\xbe\xff\xff\xff" + PRODUCTION_BYTES
    raw += b"!" * (1 + (len(raw) % 3 == 2))  # a length that needs padding
    text = base64.b64encode(raw).decode()
    assert "+" in text and "/" in text and text.endswith("=")
    return raw


@pytest.mark.parametrize(("urlsafe", "padding"), [(True, True), (True, False), (False, True), (False, False)])
def test_decode_round_trips_every_alphabet_and_padding(urlsafe: bool, padding: bool) -> None:
    raw = _needs_both_special_chars()
    text = encode_user_data(raw, urlsafe=urlsafe, padding=padding)
    assert ("=" in text) is padding
    assert decode_user_data(text) == raw


@pytest.mark.parametrize("padding", [True, False])
def test_production_shape_urlsafe(padding: bool) -> None:
    raw = PRODUCTION_BYTES
    text = encode_user_data(raw, urlsafe=True, padding=padding)
    user = verify_user_data(text, sign_user_data(raw, VECTOR_TOKEN), PARTNER)
    assert user.id == "4242"
    assert user.name == "Ольга Кузнецова"
    assert user.phone == "79006464263"
    assert user.email == "olga@example.ru"


def test_urlsafe_with_special_chars_verifies() -> None:
    raw = compact({"id": 7, "name": "Ёжик ~~~ ???>>>"})
    text = encode_user_data(raw, urlsafe=True)
    assert "-" in text or "_" in text
    assert verify_user_data(text, sign_user_data(raw, VECTOR_TOKEN), PARTNER).name == "Ёжик ~~~ ???>>>"


def test_plus_arriving_as_space() -> None:
    raw = _needs_both_special_chars()
    text = encode_user_data(raw).replace("+", " ")
    assert " " in text
    assert decode_user_data(text) == raw


def test_cyrillic_name_standard_alphabet() -> None:
    raw = compact({"user_id": "u-1", "name": "Мария Петрова-Водкина"})
    user = verify_user_data(encode_user_data(raw), sign_user_data(raw, VECTOR_TOKEN), PARTNER)
    assert user.id == "u-1"
    assert user.name == "Мария Петрова-Водкина"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a",  # impossible length
        "abc!",  # not in any alphabet
        "ab\ncd",
        "ab+-",  # mixes alphabets
        "YWJj===",  # wrong padding
        "YQ=",  # wrong padding (needs two)
        "YQ==YQ==",  # padding in the middle
        "A" * 20_000,
    ],
)
def test_decode_refuses_malformed(bad: str) -> None:
    with pytest.raises(InvalidUserData):
        decode_user_data(bad)


# ---- signature refusals ---------------------------------------------------------------------------------


def test_tampered_byte_refused() -> None:
    raw = bytearray(PRODUCTION_BYTES)
    sign = sign_user_data(bytes(raw), VECTOR_TOKEN)
    raw[10] ^= 0x01
    with pytest.raises(InvalidSignature):
        verify_user_data(encode_user_data(bytes(raw), urlsafe=True), sign, PARTNER)


def test_signature_over_base64_text_refused() -> None:
    text = encode_user_data(PRODUCTION_BYTES, urlsafe=True)
    wrong = sign_user_data(text.encode(), VECTOR_TOKEN)
    with pytest.raises(InvalidSignature):
        verify_user_data(text, wrong, PARTNER)


def test_signature_over_reserialised_json_refused() -> None:
    pretty = json.dumps(json.loads(VECTOR_BYTES)).encode()  # \u escapes, spaces
    with pytest.raises(InvalidSignature):
        verify_user_data(encode_user_data(VECTOR_BYTES), sign_user_data(pretty, VECTOR_TOKEN), PARTNER)


@pytest.mark.parametrize("sign", [None, "", "   "])
def test_missing_sign_refused(sign: str | None) -> None:
    with pytest.raises(InvalidSignature):
        verify_user_data(encode_user_data(VECTOR_BYTES), sign, PARTNER)


@pytest.mark.parametrize("sign", ["zz" * 32, VECTOR_SIGN[:-1], VECTOR_SIGN + "0", "п" * 64])
def test_malformed_sign_refused(sign: str) -> None:
    with pytest.raises(InvalidSignature):
        verify_user_data(encode_user_data(VECTOR_BYTES), sign, PARTNER)


def test_other_partner_token_refused() -> None:
    with pytest.raises(InvalidSignature):
        verify_user_data(encode_user_data(VECTOR_BYTES), VECTOR_SIGN, SecretStr("another-token"))


def test_empty_partner_token_refused() -> None:
    with pytest.raises(InvalidSignature):
        verify_user_data(encode_user_data(VECTOR_BYTES), sign_user_data(VECTOR_BYTES, ""), SecretStr(""))


def test_exceptions_are_value_errors() -> None:
    assert issubclass(InvalidSignature, ValueError)
    assert issubclass(InvalidUserData, ValueError)
    assert issubclass(InvalidSalonId, ValueError)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", b"null"])
def test_signed_but_not_a_json_object_refused(raw: bytes) -> None:
    with pytest.raises(InvalidUserData):
        verify_user_data(encode_user_data(raw), sign_user_data(raw, VECTOR_TOKEN), PARTNER)


def test_every_field_optional_and_types_tolerated() -> None:
    raw = compact({"id": None, "user_id": 55, "phone": 79006464263, "name": "", "email": ["x"]})
    user = verify_user_data(encode_user_data(raw), sign_user_data(raw, VECTOR_TOKEN), PARTNER)
    assert user.id == "55"
    assert user.phone == "79006464263"
    assert user.name is None
    assert user.email is None
    empty = verify_user_data(encode_user_data(b"{}"), sign_user_data(b"{}", VECTOR_TOKEN), PARTNER)
    assert empty.id is None and empty.name is None


# ---- salon ids ------------------------------------------------------------------------------------------


def test_single_salon_id() -> None:
    assert parse_salon_ids([("salon_id", "962302"), ("user_data", "x")]) == [962302]


def test_repeated_brackets() -> None:
    assert parse_salon_ids([("salon_ids[]", "1"), ("salon_ids[]", "2")]) == [1, 2]


def test_indexed_brackets() -> None:
    assert parse_salon_ids([("salon_ids[0]", "10"), ("salon_ids[1]", "20")]) == [10, 20]


def test_deduplicates_keeping_order() -> None:
    items = [("salon_ids[]", "3"), ("salon_ids[]", "1"), ("salon_ids[]", "3"), ("salon_id", "1")]
    assert parse_salon_ids(items) == [3, 1]


def test_upper_bound_is_accepted() -> None:
    assert parse_salon_ids([("salon_id", str(2**53))]) == [2**53]


def test_fifty_ids_accepted() -> None:
    assert parse_salon_ids([("salon_ids[]", str(i)) for i in range(1, 51)]) == list(range(1, 51))


@pytest.mark.parametrize(
    "items",
    [
        [],
        [("user_data", "x")],
        [("salon_id", "")],
        [("salon_id", "abc")],
        [("salon_id", "1.5")],
        [("salon_id", "-3")],
        [("salon_id", "+3")],
        [("salon_id", "0")],
        [("salon_id", "٣")],  # a non-ASCII digit
        [("salon_id", str(2**53 + 1))],
        [("salon_id", "9" * 40)],
        [("salon_ids[]", "1"), ("salon_ids[]", "x")],
        [("salon_ids[]", str(i)) for i in range(1, 52)],
    ],
)
def test_salon_id_refusals(items: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidSalonId):
        parse_salon_ids(items)


# ---- onboarding JWT -------------------------------------------------------------------------------------


def test_token_round_trips() -> None:
    token = issue_onboarding_token([5, 6], secret=JWT_SECRET, user_id="42", now=NOW)
    claims = read_onboarding_token(token, secret=JWT_SECRET, now=NOW + timedelta(minutes=59))
    assert claims == OnboardingClaims(salon_ids=[5, 6], user_id="42", expires_at=NOW + timedelta(hours=1))
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == JWT_ISSUER
    assert payload["aud"] == JWT_AUDIENCE
    assert payload["sub"] == "5"
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_token_without_user_and_with_wall_clock() -> None:
    token = issue_onboarding_token([7], secret=JWT_SECRET)
    claims = read_onboarding_token(token, secret=JWT_SECRET)
    assert claims.salon_ids == [7]
    assert claims.user_id is None
    assert "uid" not in jwt.decode(token, options={"verify_signature": False})


def test_expired_token_refused() -> None:
    token = issue_onboarding_token([5], secret=JWT_SECRET, ttl_s=60, now=NOW)
    with pytest.raises(ExpiredToken):
        read_onboarding_token(token, secret=JWT_SECRET, now=NOW + timedelta(seconds=60))
    assert issubclass(ExpiredToken, TokenError) and issubclass(InvalidToken, TokenError)
    assert issubclass(TokenError, ValueError)


def _forge(claims: dict[str, Any], *, key: str = JWT_SECRET.get_secret_value(), alg: str = "HS256") -> str:
    base: dict[str, Any] = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": "5",
        "salon_ids": [5],
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(hours=1)).timestamp()),
    }
    base.update(claims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # HS512 with our 37-byte key
        return jwt.encode({k: v for k, v in base.items() if v is not None}, key, algorithm=alg)


def _none_alg_token() -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = b64({"alg": "none", "typ": "JWT"})
    payload = b64(jwt.decode(_forge({}), options={"verify_signature": False}))
    return f"{header}.{payload}."


@pytest.mark.parametrize(
    "token",
    [
        _forge({"aud": "admin"}),
        _forge({"aud": None}),
        _forge({"iss": "someone-else"}),
        _forge({"iss": None}),
        _forge({}, key="another-key-another-key-another-key"),
        _forge({}, alg="HS512"),
        _none_alg_token(),
        _forge({"salon_ids": []}),
        _forge({"salon_ids": ["5"]}),
        _forge({"salon_ids": [5, True]}),
        _forge({"sub": "6"}),
        _forge({"uid": 42}),
        _forge({"iat": int((NOW + timedelta(hours=1)).timestamp())}),
        "",
        "not.a.token",
        "x" * 5000,
    ],
)
def test_bad_tokens_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_onboarding_token(token, secret=JWT_SECRET, now=NOW)


def test_tampered_claims_refused() -> None:
    token = issue_onboarding_token([5], secret=JWT_SECRET, now=NOW)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["salon_ids"] = [6]
    claims["sub"] = "6"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        read_onboarding_token(f"{header}.{forged}.{signature}", secret=JWT_SECRET, now=NOW)


@pytest.mark.parametrize("salon_ids", [[], [0], [-1], [2**53 + 1]])
def test_issue_refuses_bad_salon_ids(salon_ids: list[int]) -> None:
    with pytest.raises(ValueError):
        issue_onboarding_token(salon_ids, secret=JWT_SECRET, now=NOW)


def test_issue_refuses_naive_now_and_empty_secret() -> None:
    with pytest.raises(ValueError):
        issue_onboarding_token([1], secret=JWT_SECRET, now=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        issue_onboarding_token([1], secret=SecretStr(""))
