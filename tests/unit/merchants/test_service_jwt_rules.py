"""The pure rules of service-to-service JWTs (merchants/model.py): which public keys a client may
register, which claims a verified token must carry, and the mode a service principal acts in."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from paycore.merchants import model
from paycore.merchants.model import InvalidClaims, check_claims

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
HOUR = 3600.0
MERCHANT = uuid.UUID("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")


def _pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_2048():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**overrides):
    base = {
        "iss": "billing-service",
        "merchant_id": str(MERCHANT),
        "jti": "tok-1",
        "iat": int(NOW),
        "exp": int(NOW + 300),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def check(c, *, max_lifetime=HOUR, leeway=30.0):
    return check_claims(c, now=NOW, max_lifetime=max_lifetime, leeway=leeway)


# --- public keys ----------------------------------------------------------------------------------
def test_an_rsa_2048_public_key_is_accepted_and_stored_canonically(rsa_2048):
    key = model.load_rsa_public_key(_pem(rsa_2048))
    assert key.key_size == 2048
    assert model.public_key_pem(key) == _pem(rsa_2048)
    assert model.load_rsa_public_key(_pem(rsa_2048).encode()).public_numbers() == key.public_numbers()


def test_the_fingerprint_names_the_key_and_differs_between_keys(rsa_2048):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    first = model.key_fingerprint(model.load_rsa_public_key(_pem(rsa_2048)))
    assert first == model.key_fingerprint(model.load_rsa_public_key(_pem(rsa_2048)))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert first != model.key_fingerprint(model.load_rsa_public_key(_pem(other)))


def test_a_short_rsa_key_is_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024 bits; at least 2048"):
        model.load_rsa_public_key(_pem(weak))


def test_a_non_rsa_key_is_refused():
    with pytest.raises(ValueError, match="must be an RSA key"):
        model.load_rsa_public_key(_pem(ec.generate_private_key(ec.SECP256R1())))


def test_a_private_key_is_refused_and_never_parsed(rsa_2048):
    private_pem = rsa_2048.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValueError, match="private key"):
        model.load_rsa_public_key(private_pem)


@pytest.mark.parametrize(
    "text", ["", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]
)
def test_garbage_is_refused(text):
    with pytest.raises(ValueError, match="not a valid PEM public key"):
        model.load_rsa_public_key(text)


# --- issuers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("issuer", ["billing-service", "https://billing.example.com", "svc:orders@eu-1", "a"])
def test_issuers_that_are_accepted(issuer):
    assert model.validate_issuer(issuer) == issuer


@pytest.mark.parametrize("issuer", ["", "two words", "a|b", "a;b", "-leading-dash", "x" * 256, "tab\there"])
def test_issuers_that_are_refused(issuer):
    # `|` and `;` would break the cache-invalidation payload; spaces and control characters are typos
    with pytest.raises(ValueError, match="issuer must be"):
        model.validate_issuer(issuer)


# --- claims -----------------------------------------------------------------------------------------
def test_valid_claims_give_the_merchant_and_token_id():
    checked = check(claims())
    assert checked == model.ServiceClaims(
        issuer="billing-service", merchant_id=MERCHANT, jti="tok-1", expires_at=int(NOW + 300)
    )


def test_iat_and_nbf_are_optional():
    checked = check(claims(iat=None, nbf=None))
    assert checked.merchant_id == MERCHANT


@pytest.mark.parametrize(
    ("missing", "message"),
    [("iss", "iss is required"), ("exp", "exp is required"), ("jti", "jti is required"),
     ("merchant_id", "merchant_id is required")],
)  # fmt: skip
def test_each_required_claim_is_required(missing, message):
    with pytest.raises(InvalidClaims, match=message):
        check(claims(**{missing: None}))


@pytest.mark.parametrize("merchant_id", ["acme", "", "1234", 42, [str(MERCHANT)]])
def test_merchant_id_must_be_a_uuid_string(merchant_id):
    with pytest.raises(InvalidClaims, match="merchant_id"):
        check(claims(merchant_id=merchant_id))


@pytest.mark.parametrize("jti", ["", "x" * 256, 17, ["a"]])
def test_jti_must_be_1_to_255_characters_of_text(jti):
    with pytest.raises(InvalidClaims, match="jti"):
        check(claims(jti=jti))


def test_a_255_character_jti_is_fine():
    assert check(claims(jti="j" * 255)).jti == "j" * 255


@pytest.mark.parametrize("exp", ["1800000300", True, float("nan"), float("inf")])
def test_exp_must_be_a_number(exp):
    with pytest.raises(InvalidClaims):
        check(claims(exp=exp))


def test_expiry_is_judged_with_the_leeway():
    assert check(claims(iat=int(NOW - 600), exp=int(NOW - 10)), leeway=30).jti == "tok-1"
    with pytest.raises(InvalidClaims, match=r"^expired$"):
        check(claims(iat=int(NOW - 600), exp=int(NOW - 31)), leeway=30)
    with pytest.raises(InvalidClaims, match=r"^expired$"):
        check(claims(iat=int(NOW - 600), exp=int(NOW - 1)), leeway=0)


def test_tokens_issued_or_valid_only_in_the_future_are_refused():
    assert check(claims(iat=int(NOW + 20), exp=int(NOW + 300))).jti == "tok-1"  # within the leeway
    with pytest.raises(InvalidClaims, match="iat is in the future"):
        check(claims(iat=int(NOW + 120), exp=int(NOW + 300)))
    with pytest.raises(InvalidClaims, match="not valid yet"):
        check(claims(nbf=int(NOW + 120)))


def test_lifetime_is_bounded_by_exp_minus_iat():
    assert check(claims(iat=int(NOW), exp=int(NOW + HOUR))).jti == "tok-1"
    with pytest.raises(InvalidClaims, match="lives longer"):
        check(claims(iat=int(NOW - 10), exp=int(NOW + HOUR)))  # 1 h 10 s, although only 1 h is left


def test_lifetime_is_bounded_without_iat_too():
    # without `iat` a year-long token would otherwise pass: `exp - now` is bounded as well
    assert check(claims(iat=None, exp=int(NOW + HOUR))).jti == "tok-1"
    with pytest.raises(InvalidClaims, match="lives longer"):
        check(claims(iat=None, exp=int(NOW + 365 * 86400)))


def test_a_lower_configured_lifetime_applies():
    with pytest.raises(InvalidClaims, match="lives longer"):
        check(claims(exp=int(NOW + 301)), max_lifetime=300)


# --- shapes and modes -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "expected"),
    [("a.b.c", True), ("eyJ.eyJ.sig", True), ("sk_test_" + "x" * 32, False), ("a.b", False),
     ("a..c", False), ("a.b.c.d", False), ("", False)],
)  # fmt: skip
def test_what_looks_like_a_jwt(token, expected):
    assert model.looks_like_jwt(token) is expected


def test_a_service_principal_acts_in_its_merchants_mode():
    assert model.mode_for_environment("sandbox") == "test"
    assert model.mode_for_environment("production") == "live"
    assert model.mode_allowed(model.mode_for_environment("sandbox"), "sandbox")
    assert model.mode_allowed(model.mode_for_environment("production"), "production")
