"""Self-test for the glewlwyd harness: pytest tests/integration/idp/selftest_glewlwyd.py"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from glewlwyd import Glewlwyd, free_port  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("glewlwyd") is None, reason="apt-get install -y glewlwyd")


def b64u_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def split(token: str) -> tuple[dict, dict, bytes, bytes]:
    h, p, sig = token.split(".")
    return json.loads(b64u_decode(h)), json.loads(b64u_decode(p)), f"{h}.{p}".encode(), b64u_decode(sig)


def public_key(jwk: dict) -> rsa.RSAPublicKey:
    assert jwk["kty"] == "RSA"
    n = int.from_bytes(b64u_decode(jwk["n"]), "big")
    e = int.from_bytes(b64u_decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def verify(token: str, jwks: dict) -> tuple[dict, dict]:
    """Verify an RS256 JWT against a JWKS (by kid). Returns (header, payload)."""
    header, payload, signing_input, sig = split(token)
    assert header["alg"] == "RS256"
    keys = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in keys, f"kid {header['kid']} not in JWKS {list(keys)}"
    public_key(keys[header["kid"]]).verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
    return header, payload


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    with Glewlwyd(tmp_path_factory.mktemp("glewlwyd"), free_port()) as g:
        yield g


def test_startup_is_fast(idp):
    assert idp.ready_seconds is not None and idp.ready_seconds < 5, idp.ready_seconds


def test_discovery(idp):
    d = requests.get(idp.discovery_url, timeout=5).json()
    assert d["issuer"] == idp.issuer
    assert d["jwks_uri"] == idp.jwks_uri
    assert d["token_endpoint"] == idp.token_endpoint
    assert idp.issuer.startswith("http://127.0.0.1:")


def test_token_claims_and_signature(idp):
    tok = idp.token()
    jwks = requests.get(idp.jwks_uri, timeout=5).json()
    header, payload = verify(tok, jwks)
    assert header["kid"] == idp.current_kid()
    assert [k["kid"] for k in jwks["keys"]] == [idp.current_kid()]
    assert payload["iss"] == idp.issuer == requests.get(idp.discovery_url, timeout=5).json()["issuer"]
    assert payload["aud"] == idp.audience
    assert payload["sub"] == idp.client_id
    assert payload["client_id"] == idp.client_id
    assert payload["scope"] == "gatehouse"
    now = time.time()
    assert payload["iat"] <= now + 5 and payload["exp"] > now
    assert payload["exp"] - payload["iat"] == idp.token_ttl


def test_tampered_token_fails(idp):
    tok = idp.token()
    h, p, s = tok.split(".")
    _, payload, _, _ = split(tok)
    payload["aud"] = "https://evil.test/"
    p2 = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify(f"{h}.{p2}.{s}", idp.jwks())


def test_audience_variants_and_auth(idp):
    assert split(idp.token(resource=None))[1]["aud"] == "gatehouse"  # no resource: aud = scope list
    assert split(idp.token(resource="https://other.test/"))[1]["aud"] == "https://other.test/"
    assert idp.token_response(resource="https://not-allowed.test/").status_code == 400
    assert split(idp.token(auth="post"))[1]["client_id"] == idp.client_id
    r = requests.post(idp.token_endpoint, data={"grant_type": "client_credentials", "scope": "gatehouse"},
                      auth=(idp.client_id, "wrong-secret"), timeout=5)
    assert r.status_code in (401, 403)


def test_rotate_key(idp):
    old_kid = idp.current_kid()
    old_tok = idp.token()
    new_kid = idp.rotate_key()
    assert new_kid != old_kid and idp.current_kid() == new_kid
    jwks = requests.get(idp.jwks_uri, timeout=5).json()
    kids = [k["kid"] for k in jwks["keys"]]
    assert new_kid in kids
    assert old_kid not in kids  # default rotation drops the old key
    header, payload = verify(idp.token(), jwks)
    assert header["kid"] == new_kid and payload["iss"] == idp.issuer
    with pytest.raises(AssertionError):
        verify(old_tok, jwks)


def test_rotate_key_keep_old(idp):
    old_kid = idp.current_kid()
    old_tok = idp.token()
    new_kid = idp.rotate_key(keep_old=True)
    jwks = idp.jwks()
    assert [k["kid"] for k in jwks["keys"]][:2] == [new_kid, old_kid]
    assert verify(idp.token(), jwks)[0]["kid"] == new_kid
    assert verify(old_tok, jwks)[0]["kid"] == old_kid


def test_short_ttl_and_second_instance(tmp_path):
    with Glewlwyd(tmp_path / "b", free_port(), token_ttl=2, client_id="other-client") as g:
        _, payload = verify(g.token(), g.jwks())
        assert payload["exp"] - payload["iat"] == 2
        assert payload["client_id"] == "other-client"
        assert (tmp_path / "b" / "glewlwyd.log").stat().st_size > 0
    assert not (tmp_path / "b" / "glewlwyd.sqlite3").exists()
