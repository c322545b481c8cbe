"""Identity through the running gateway: a real OIDC provider (glewlwyd), the dev issuer, API keys."""
from __future__ import annotations

import json
import re
import time
import base64

import requests

from conftest import gatehouse


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def issuer_config(idp, audience: str | None = None) -> str:
    return f"""
identity:
  jwks_min_refetch_seconds: 1
  issuers:
    - name: glewlwyd
      issuer: {idp.issuer}
      audiences: [{audience or idp.audience}]
      agents:
        {idp.client_id}: claude-code
"""


def test_a_token_from_a_real_provider_is_verified_and_recorded(idp, gateway_factory):
    gw = gateway_factory(issuer_config(idp))
    response = gw.whoami(idp.token(), **{"User-Agent": "pytest-agent", "Gatehouse-Intent": "check who I am"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subject"] == idp.client_id
    assert body["issuer"] == idp.issuer
    assert body["agent"] == "claude-code"

    [event] = gw.events()
    record = event["record"]
    assert record["decision"]["effect"] == "allow"
    assert record["principal"]["subject"] == idp.client_id
    assert record["principal"]["actors"][0]["subject"] == "claude-code"
    assert record["client"]["application"] == "pytest-agent"
    assert record["client"]["address"].startswith("127.0.0.1:")
    assert record["operation"]["intent"] == "check who I am"
    assert record["node"] == "test-node"
    assert '"agent":"claude-code"' in record["payload"] and "payloadTruncated" not in record


def test_recorded_responses_are_cut_at_the_configured_cap(gateway_factory):
    gw = gateway_factory(audit_config="  max_payload_bytes: 24")
    token = gw.cli("dev", "token", "--subject", "alice", "--actor", "claude-code", check=True).stdout.strip()
    full = gw.whoami(token).text
    [event] = gw.events()
    assert event["record"]["payload"] == full.encode()[:24].decode()
    assert event["record"]["payloadTruncated"] is True


def test_key_rotation_at_the_provider_is_followed(idp, gateway_factory):
    gw = gateway_factory(issuer_config(idp))
    old_token = idp.token()
    assert gw.whoami(old_token).status_code == 200

    old_kid = kid_of(old_token)
    new_kid = idp.rotate_key()
    new_token = idp.token()
    assert kid_of(new_token) == new_kid != old_kid
    # Refetches on unknown kids are rate limited (1 s in this config); let the startup fetch age.
    time.sleep(1.1)
    # The gateway has never seen this kid: it refetches the provider's keys and accepts the token.
    assert gw.whoami(new_token).status_code == 200, gw.log_text()
    # The provider no longer publishes the old key, so tokens signed with it stop working.
    assert gw.whoami(old_token).status_code == 401

    reasons = [e["record"]["outcome"].get("errorCode") for e in gw.events() if e["record"]["decision"]["effect"] == "deny"]
    assert reasons == ["unknown-kid"]


def test_rejections_give_the_client_nothing_and_the_trail_the_reason(idp, gateway_factory):
    gw = gateway_factory(issuer_config(idp))
    wrong_audience = idp.token(resource="https://other.test/")
    cases = {
        "wrong-audience": wrong_audience,
        "malformed": "not-a-jwt",
        "oversized": "a" * 20000,
        "missing": None,
    }
    for expected, token in cases.items():
        response = gw.whoami(token)
        assert response.status_code == 401, expected
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["detail"] == "authentication failed"
        assert expected not in response.text

    denied = [e["record"] for e in gw.events()]
    assert [r["outcome"]["errorCode"] for r in denied] == list(cases)
    assert all(r.get("principal") is None and r["decision"]["effect"] == "deny" for r in denied)
    # The credential itself never reaches the trail.
    raw = gw.cli("audit", "list", "--json").stdout
    assert wrong_audience not in raw and wrong_audience.split(".")[2] not in raw

    metrics = requests.get(gw.url + "/metrics", timeout=5).text
    assert re.search(r'gatehouse_token_rejections_total\{reason="wrong-audience"\} 1', metrics), metrics
    assert re.search(r'gatehouse_requests_total\{protocol="admin",decision="deny"\} 4', metrics), metrics
    assert re.search(r'gatehouse_request_duration_seconds_count\{protocol="admin"\} 4', metrics), metrics
    assert re.search(r"gatehouse_audit_batch_size_count \d+", metrics), metrics
    assert "gatehouse_audit_queue_depth" in metrics


def test_the_dev_issuer_goes_through_discovery_and_jwks(gateway_factory):
    gw = gateway_factory()
    discovery = requests.get(gw.url + "/dev/.well-known/openid-configuration", timeout=5).json()
    assert discovery["issuer"] == gw.url + "/dev"
    assert requests.get(discovery["jwks_uri"], timeout=5).json()["keys"][0]["alg"] == "ES256"

    token = gw.cli("dev", "token", "--subject", "alice", "--groups", "dev,oncall", "--actor", "claude-code", check=True).stdout.strip()
    body = gw.whoami(token).json()
    assert (body["subject"], body["groups"], body["agent"]) == ("alice", ["dev", "oncall"], "claude-code")

    # The development issuer is off unless the config says dev: true.
    gw.config.write_text(gw.config.read_text().replace("dev: true\n", ""))
    refused = gw.cli("dev", "token", "--subject", "alice")
    assert refused.returncode == 1 and "dev: true" in refused.stderr


def test_service_account_keys_work_until_revoked(gateway_factory):
    gw = gateway_factory()
    created = gw.cli("keys", "create", "--name", "ci-bot", "--groups", "ci,readers", check=True)
    key = created.stdout.strip()
    assert key.startswith("ghk_")

    body = gw.whoami(key).json()
    assert (body["subject"], body["groups"], body["auth_method"]) == ("ci-bot", ["ci", "readers"], "api-key")
    assert key not in gw.cli("keys", "list", check=True).stdout

    gw.cli("keys", "revoke", "ci-bot", check=True)
    assert gw.whoami(key).status_code == 401
    assert gw.events()[-1]["record"]["outcome"]["errorCode"] == "revoked-api-key"
    key_id = key.split("_")[1]
    secret = key[len(f"ghk_{key_id}_"):]
    stored = b"".join(p.read_bytes() for p in (gw.workdir / "state").glob("api-keys.sqlite*"))
    assert key_id.encode() in stored and secret.encode() not in stored


def test_readiness_waits_for_every_issuers_keys(idp, gateway_factory, workdir):
    gw = gateway_factory(issuer_config(idp))
    assert requests.get(gw.url + "/readyz", timeout=5).json()["checks"] == {"audit": True, "issuer:dev": True, "issuer:glewlwyd": True}
    token_for_down_issuer = idp.token()
    idp.stop()
    gw.stop()
    # Started while the provider is down: alive, but not ready, and tokens cannot be checked.
    gw2 = gateway_factory(issuer_config(idp), start=False).start(wait_ready=False)
    assert requests.get(gw2.url + "/healthz", timeout=5).status_code == 200
    ready = requests.get(gw2.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["checks"]["issuer:glewlwyd"] is False
    # A token naming that issuer cannot be checked, so it is refused (fail closed).
    assert gw2.whoami(token_for_down_issuer).status_code == 401
    assert gw2.events()[-1]["record"]["outcome"]["errorCode"] == "keys-unavailable"


def test_the_admin_listener_serves_https_when_configured(gateway_factory, workdir):
    """admin.tls: the reviewers' API and whoami answer over https only, and the CLI reaches them
    from the configuration, trusting the configured (self-signed) certificate."""
    import subprocess

    certs = workdir / "admin-certs"
    certs.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=gatehouse-admin",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(certs / "admin.key"), "-out", str(certs / "admin.pem")],
        check=True, capture_output=True)
    gw = gateway_factory(dev=False, start=False)
    gw.config.write_text(gw.config.read_text().replace(
        f"admin:\n  listen: 127.0.0.1:{gw.port}\n",
        f"admin:\n  listen: 127.0.0.1:{gw.port}\n  tls:\n    certificate: {certs / 'admin.pem'}\n    key: {certs / 'admin.key'}\n"))
    gw.url = f"https://127.0.0.1:{gw.port}"
    gw.start(wait_ready=False)
    assert gw.cli("check").returncode == 0

    key = gw.cli("keys", "create", "--name", "ci-bot", "--groups", "ci", check=True).stdout.strip()
    deadline = time.time() + 20
    while requests.get(gw.url + "/readyz", verify=str(certs / "admin.pem"), timeout=5).status_code != 200:
        assert time.time() < deadline
        time.sleep(0.1)
    r = requests.get(gw.url + "/v1/whoami", headers={"Authorization": f"Bearer {key}"}, verify=str(certs / "admin.pem"), timeout=10)
    assert r.status_code == 200 and r.json()["subject"] == "ci-bot"
    # Not over plain HTTP, and not to a client that does not trust the certificate.
    try:
        plain = requests.get(f"http://127.0.0.1:{gw.port}/v1/whoami", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert plain.status_code >= 400
    except requests.exceptions.ConnectionError:
        pass
    try:
        requests.get(gw.url + "/healthz", timeout=10)
        raise AssertionError("an untrusted certificate was accepted")
    except requests.exceptions.SSLError:
        pass
    listed = gw.cli("reviews", "list", "--token", key)
    assert listed.returncode == 0, listed.stderr
    # Named by URL, without the configuration: trusted through --cacert (an untrusted certificate
    # is refused as requests showed above; the CLI's client would retry it until its deadline).
    trusted = gatehouse("reviews", "list", "--token", key, "--config", str(workdir / "none.yaml"), "--gateway", gw.url,
                        "--cacert", str(certs / "admin.pem"))
    assert trusted.returncode == 0, trusted.stderr
    # Reachable from other machines only with TLS.
    exposed = gw.config.read_text().replace(f"  tls:\n    certificate: {certs / 'admin.pem'}\n    key: {certs / 'admin.key'}\n", "")
    exposed = exposed.replace(f"listen: 127.0.0.1:{gw.port}", f"listen: 0.0.0.0:{gw.port}")
    gw.config.write_text(exposed)
    check = gw.cli("check")
    assert check.returncode != 0 and "needs admin.tls" in check.stdout + check.stderr
