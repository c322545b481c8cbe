"""The HTTP gateway end to end: curl and Python `requests` through Gatehouse to a real HTTP server
(examples/sample_api.py in its own process), with credential injection, streaming both ways, SSE,
request rules, upstream failures and the audit events they leave."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO, free_port

API_KEY = "sample-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def sample_api():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "sample_api.py"), "--port", str(port)],
        env={**os.environ, "SAMPLE_API_KEY": API_KEY},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert "listening" in process.stdout.readline()
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def http_config(upstream: str, extra: str = "") -> str:
    return f"""
http:
  listen: 127.0.0.1:HTTP_LISTEN_PORT
  max_recorded_body_bytes: 4096
connections:
  - name: config-api
    type: http
    upstream: {upstream}
    credential:
      header: X-Api-Key
      value: env:SAMPLE_API_KEY
    hosts: [config.internal]
    timeouts:
      read_seconds: 2
      total_seconds: 30
    allow:
      groups: [dev]
    requests:
      - name: read-anything
        methods: [GET, HEAD]
      - name: write-config
        methods: [PUT, POST]
        paths: ["/config/*", "/upload", "/echo"]
      - name: agents-may-not-delete
        effect: deny
        methods: [DELETE]
        paths: ["/config/*"]
        agents: ["*"]
      - name: people-may-delete
        methods: [DELETE]
        paths: ["/config/*"]
      - name: no-bulk-export-for-agents
        effect: deny
        paths: ["/export**"]
        agents: ["*"]
{extra}
"""


@pytest.fixture
def gw(gateway_factory, sample_api):
    return gateway_factory(http_config(sample_api), env={"SAMPLE_API_KEY": API_KEY})


def token(gw, subject="alice", groups="dev", actor: str | None = "claude-code") -> str:
    args = ["dev", "token", "--subject", subject, "--groups", groups]
    if actor:
        args += ["--actor", actor]
    return gw.cli(*args, check=True).stdout.strip()


def wait_for_events(gw, kind: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
    """Response events are written just after the response; give them a moment."""
    deadline = time.time() + timeout
    while True:
        events = [e for e in gw.events() if e["record"]["operation"]["kind"] == kind]
        if len(events) >= count or time.time() > deadline:
            return events
        time.sleep(0.05)


def curl(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=timeout)


def test_credential_is_injected_and_the_client_token_never_reaches_the_upstream(gw):
    client_token = token(gw)
    r = requests.get(
        gw.http_url + "/c/config-api/echo?x=1",
        headers={"Authorization": f"Bearer {client_token}", "X-Api-Key": "chosen-by-client",
                 "Gatehouse-Intent": "check what the API receives", "X-Forwarded-For": "6.6.6.6"},
        timeout=30)
    assert r.status_code == 200, r.text
    seen = r.json()
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["x-api-key"] == API_KEY, "the upstream sees the real key, not the client's"
    assert "authorization" not in headers, "the client's token stays in the gateway"
    assert "gatehouse-intent" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert seen["path"] == "/echo" and seen["query"] == "x=1"
    # The client never receives the key (the echo body is the upstream's business; headers are ours).
    assert API_KEY not in json.dumps(dict(r.headers))

    [request_event] = [e for e in gw.events() if e["record"]["operation"]["kind"] == "http.request"]
    request = request_event["record"]
    assert request["principal"]["subject"] == "alice"
    assert request["principal"]["actors"][0]["subject"] == "claude-code"
    assert request["connection"] == "config-api"
    assert request["operation"]["text"] == "GET /echo?x=1"
    assert request["operation"]["intent"] == "check what the API receives"
    assert request["decision"] == {"effect": "allow", "rule": "read-anything", "reason": "rule read-anything allows GET /echo"}
    payload = json.loads(request["payload"])
    recorded = dict(payload["headers"])
    assert recorded["authorization"] == "[redacted]" and recorded["x-api-key"] == "[redacted]"
    [response] = [e["record"] for e in wait_for_events(gw, "http.response")]
    assert response["outcome"]["status"] == "200"
    assert response["operation"]["text"] == f"response to event {request_event['seq']}"
    assert response["session"] == request["session"] and response["session"].startswith("http-")
    # The echo endpoint returns the key in its body: the trail keeps the response, not the key.
    assert "[credential]" in json.loads(response["payload"])["body"]
    listed = gw.cli("audit", "list", "--json", check=True).stdout
    assert client_token not in listed and API_KEY not in listed
    state = Path(gw.workdir) / "state"
    for name in ("audit.sqlite", "audit.sqlite-wal"):
        if (state / name).exists():
            raw = (state / name).read_bytes()
            assert client_token.encode() not in raw and API_KEY.encode() not in raw, name


def test_curl_config_service_round_trip_and_host_routing(gw):
    auth = f"Authorization: Bearer {token(gw, actor=None)}"
    base = gw.http_url + "/c/config-api"
    put = curl("-X", "PUT", "-H", auth, "-H", "Content-Type: application/json", "--data", '"dark"', base + "/config/theme")
    assert json.loads(put.stdout) == {"key": "theme", "value": "dark"}, put.stdout + put.stderr
    got = curl("-H", auth, base + "/config/theme")
    assert json.loads(got.stdout) == {"key": "theme", "value": "dark"}
    by_host = curl("-H", auth, "-H", "Host: config.internal", gw.http_url + "/config/theme")
    assert json.loads(by_host.stdout)["value"] == "dark", by_host.stdout
    deleted = curl("-X", "DELETE", "-H", auth, base + "/config/theme")
    assert json.loads(deleted.stdout)["deleted"] is True
    requests_ = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "http.request"]
    assert [r["operation"]["text"] for r in requests_] == [
        "PUT /config/theme", "GET /config/theme", "GET /config/theme", "DELETE /config/theme"]
    assert json.loads(requests_[0]["payload"])["body"] == '"dark"', "the request body is recorded before forwarding"
    responses = wait_for_events(gw, "http.response", 4)
    assert json.loads(responses[0]["record"]["payload"])["body"].strip() == '{"key": "theme", "value": "dark"}'


def test_policy_refusals_are_problem_documents_naming_the_rule(gw):
    agent = {"Authorization": f"Bearer {token(gw)}"}
    r = requests.delete(gw.http_url + "/c/config-api/config/banner", headers=agent, timeout=30)
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 403 and problem["rule"] == "agents-may-not-delete"
    assert "DELETE /config/banner" in problem["detail"]

    r = requests.get(gw.http_url + "/c/config-api/export/customers", headers=agent, timeout=30)
    assert r.status_code == 403 and r.json()["rule"] == "no-bulk-export-for-agents"
    assert "ada@example.com" not in r.text

    r = requests.patch(gw.http_url + "/c/config-api/config/banner", headers=agent, timeout=30)
    assert r.status_code == 403 and r.json()["rule"] == "policy:allow-list"

    outsider = {"Authorization": f"Bearer {token(gw, subject='mallory', groups='sales', actor=None)}"}
    r = requests.get(gw.http_url + "/c/config-api/config", headers=outsider, timeout=30)
    assert r.status_code == 403 and r.json()["rule"] == "connection:config-api:allow"

    # Dot segments and path parameters would let a path pattern and the upstream disagree: refused.
    r = requests.get(gw.http_url + "/c/config-api/config/%2e%2e/export/customers", headers=agent, timeout=30)
    assert r.status_code == 400
    r = requests.get(gw.http_url + "/c/config-api/config/..;/export/customers", headers=agent, timeout=30)
    assert r.status_code == 400 and "';'" in r.json()["detail"]
    # TRACE would echo the injected key back.
    r = requests.request("TRACE", gw.http_url + "/c/config-api/echo", headers=agent, timeout=30)
    assert r.status_code == 405

    # The person (no agent) may still delete and export: the rules are about agents.
    person = {"Authorization": f"Bearer {token(gw, actor=None)}"}
    assert requests.get(gw.http_url + "/c/config-api/export/customers", headers=person, timeout=30).status_code == 200

    denied = [e["record"] for e in gw.events() if e["record"]["decision"]["effect"] == "deny"]
    assert [d["decision"]["rule"] for d in denied] == [
        "agents-may-not-delete", "no-bulk-export-for-agents", "policy:allow-list",
        "connection:config-api:allow", "path", "path", "method"]
    assert all(d["outcome"]["status"] in ("403", "400", "405") for d in denied)
    # The upstream never saw a refused request: the banner is still there.
    r = requests.get(gw.http_url + "/c/config-api/config/banner", headers=person, timeout=30)
    assert r.json()["value"] == "hello"


def test_secrets_in_the_query_are_not_recorded(gw):
    headers = {"Authorization": f"Bearer {token(gw)}"}
    r = requests.get(gw.http_url + "/c/config-api/echo?page=2&access_token=agent-secret-123&Signature=abc123def",
                     headers=headers, timeout=30)
    assert r.status_code == 200
    assert r.json()["query"] == "page=2&access_token=agent-secret-123&Signature=abc123def", "forwarded as sent"
    [request] = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "http.request"]
    assert request["operation"]["text"] == "GET /echo?page=2&access_token=[redacted]&Signature=[redacted]"


def test_bad_or_missing_token_gets_401_with_a_challenge(gw):
    r = requests.get(gw.http_url + "/c/config-api/config", timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = requests.get(gw.http_url + "/c/config-api/config", headers={"Authorization": "Bearer not-a-token"}, timeout=30)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert r.headers["Content-Type"] == "application/problem+json"
    # Unknown connections are not revealed to anonymous callers: 401 before 404.
    assert requests.get(gw.http_url + "/c/nope/x", timeout=30).status_code == 401
    r = requests.get(gw.http_url + "/c/nope/x", headers={"Authorization": f"Bearer {token(gw)}"}, timeout=30)
    assert r.status_code == 404
    refused = [e["record"] for e in gw.events()]
    assert [r["outcome"]["errorCode"] for r in refused] == ["missing-token", "malformed", "missing-token", "unknown-connection"]
    assert "not-a-token" not in json.dumps(refused)


def test_large_bodies_stream_both_ways_with_bounded_memory(gw, workdir):
    """128 MiB each way while the far side is slower than the near side: without back-pressure
    the gateway would have to hold most of it. (Memory is sampled during the transfer; glibc keeps
    freed memory, so only a slow far side tells buffering from allocator noise.)"""
    auth = f"Authorization: Bearer {token(gw, actor=None)}"
    size = 128 * 1024 * 1024
    blob = workdir / "upload.bin"
    with open(blob, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    expected = hashlib.sha256(blob.read_bytes()).hexdigest()
    with RSSMonitor(gw.process.pid) as upload_memory:
        # The upstream reads 64 KiB per 2 ms (about 32 MB/s); curl could send far faster.
        up = curl("-X", "POST", "-H", auth, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{blob}",
                  gw.http_url + "/c/config-api/upload?chunk_delay_ms=2", timeout=300)
    assert json.loads(up.stdout) == {"bytes": size, "sha256": expected}, up.stdout + up.stderr
    with RSSMonitor(gw.process.pid) as download_memory:
        # curl reads at 40 MB/s; the upstream could send far faster.
        down = subprocess.run(
            ["curl", "-sS", "--limit-rate", "40M", "-H", auth, gw.http_url + f"/c/config-api/download?bytes={size}"],
            capture_output=True, timeout=300)
    assert len(down.stdout) == size
    assert down.stdout[:512] == bytes(range(256)) * 2
    assert upload_memory.growth < 32 * 1024, f"gateway memory grew by {upload_memory.growth} KiB during the upload"
    assert download_memory.growth < 32 * 1024, f"gateway memory grew by {download_memory.growth} KiB during the download"
    upload = [e["record"] for e in gw.events() if e["record"]["operation"]["text"] == "POST /upload?chunk_delay_ms=2"][0]
    assert json.loads(upload["payload"])["body_truncated"] is True, "only the first bytes are recorded"
    responses = wait_for_events(gw, "http.response", 2)
    assert responses[1]["record"]["outcome"]["bytes"] == size


class RSSMonitor:
    """Samples a process's resident memory while a block runs; `growth` is the peak over the start."""

    def __init__(self, pid: int):
        self.pid = pid
        self.growth = 0

    def __enter__(self):
        import threading

        self.start = rss_kib(self.pid)
        self.running = True

        def sample():
            while self.running:
                self.growth = max(self.growth, rss_kib(self.pid) - self.start)
                time.sleep(0.05)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_server_sent_events_arrive_as_they_are_sent(gw):
    headers = {"Authorization": f"Bearer {token(gw)}", "Accept": "text/event-stream"}
    started = time.time()
    arrivals = []
    with requests.get(gw.http_url + "/c/config-api/events?count=4&interval_ms=400", headers=headers, stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        for line in r.iter_lines():
            if line.startswith(b"data:"):
                arrivals.append(time.time() - started)
    assert len(arrivals) == 4
    # Streamed, not buffered: the first event arrives long before the last is sent.
    assert arrivals[0] < 1.0 and arrivals[-1] - arrivals[0] > 0.9, arrivals
    [response] = wait_for_events(gw, "http.response")
    assert "event: tick" in json.loads(response["record"]["payload"])["body"]


def test_upstream_failures_are_502_and_504_and_recorded(gateway_factory, sample_api):
    dead = f"http://127.0.0.1:{free_port()}"
    config = http_config(sample_api) + f"""
  - name: dead-api
    type: http
    upstream: {dead}
    allow:
      groups: [dev]
"""
    gw = gateway_factory(config, env={"SAMPLE_API_KEY": API_KEY})
    headers = {"Authorization": f"Bearer {token(gw)}"}
    started = time.time()
    r = requests.get(gw.http_url + "/c/dead-api/anything", headers=headers, timeout=30)
    assert r.status_code == 502 and r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["connection"] == "dead-api"
    r = requests.get(gw.http_url + "/c/config-api/slow?seconds=5", headers=headers, timeout=30)
    assert r.status_code == 504, r.text
    assert time.time() - started < 10, "the read timeout (2 s) applies; nothing hangs"
    outcomes = [e["record"]["outcome"] for e in wait_for_events(gw, "http.response", 2)]
    assert [(o["status"], o["errorCode"]) for o in outcomes] == [("502", "upstream-unreachable"), ("504", "upstream-timeout")]


def test_audit_store_down_refuses_requests(gateway_factory, sample_api, workdir):
    gw = gateway_factory(http_config(sample_api), env={"SAMPLE_API_KEY": API_KEY})
    headers = {"Authorization": f"Bearer {token(gw)}"}
    assert requests.get(gw.http_url + "/c/config-api/config", headers=headers, timeout=30).status_code == 200
    # Another process holds the trail's write lock: appends fail after the busy timeout.
    import sqlite3

    holder = sqlite3.connect(str(workdir / "state" / "audit.sqlite"), timeout=1)
    holder.execute("BEGIN IMMEDIATE")
    try:
        r = requests.put(gw.http_url + "/c/config-api/config/banner", headers=headers, data='"changed"', timeout=60)
        assert r.status_code == 503
        assert r.headers["Content-Type"] == "application/problem+json"
    finally:
        holder.rollback()
        holder.close()
    r = requests.get(gw.http_url + "/c/config-api/config/banner", headers=headers, timeout=30)
    assert r.json()["value"] == "hello", "the refused PUT never reached the upstream"


def test_sessions_replay_shows_http_sessions(gw):
    headers = {"Authorization": f"Bearer {token(gw)}", "Gatehouse-Session": "task-42",
               "Gatehouse-Intent": "read the pool size before tuning"}
    requests.get(gw.http_url + "/c/config-api/config/db.pool_size", headers=headers, timeout=30)
    wait_for_events(gw, "http.response")
    listing = gw.cli("sessions", "list", check=True).stdout
    [line] = [l for l in listing.splitlines() if "-task-42" in l]
    session = line.split()[0]
    assert "alice" in line and "config-api" in line
    replay = gw.cli("sessions", "replay", session, check=True).stdout
    assert "http.request: GET /config/db.pool_size" in replay
    assert "intent: read the pool size before tuning" in replay
    assert "→ HTTP 200" in replay and '"db.pool_size"' in replay


def test_tls_on_both_sides(gateway_factory, sample_api, workdir):
    """Clients reach the gateway over https; the gateway verifies an https upstream against the
    configured CA and refuses one it cannot verify."""
    from test_postgres_tls import make_certificates

    certs_dir = workdir / "certs"
    certs_dir.mkdir()
    certs = make_certificates(certs_dir)
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "sample_api.py"), "--port", str(port),
         "--certificate", str(certs["server.pem"]), "--key", str(certs["server.key"])],
        env={**os.environ, "SAMPLE_API_KEY": API_KEY}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "listening on https" in upstream.stdout.readline()
        config = http_config(sample_api).replace(
            "  max_recorded_body_bytes: 4096\n",
            f"  max_recorded_body_bytes: 4096\n  tls:\n    certificate: {certs['server.pem']}\n    key: {certs['server.key']}\n")
        config += f"""
  - name: secure-api
    type: http
    upstream: https://localhost:{port}
    ca_file: {certs['ca.pem']}
    credential:
      header: X-Api-Key
      value: env:SAMPLE_API_KEY
    allow:
      groups: [dev]
  - name: unverifiable-api
    type: http
    upstream: https://localhost:{port}
    ca_file: {certs['other-ca.pem']}
    allow:
      groups: [dev]
"""
        gw = gateway_factory(config, env={"SAMPLE_API_KEY": API_KEY})
        https = f"https://localhost:{gw.http_port}"
        headers = {"Authorization": f"Bearer {token(gw)}"}
        r = requests.get(https + "/c/secure-api/echo", headers=headers, verify=str(certs["ca.pem"]), timeout=30)
        assert r.status_code == 200, r.text
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        assert seen["x-api-key"] == API_KEY and seen["x-forwarded-proto"] == "https"
        r = requests.get(https + "/c/unverifiable-api/echo", headers=headers, verify=str(certs["ca.pem"]), timeout=30)
        assert r.status_code == 502
        # Plain HTTP to the TLS listener gets nowhere.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{gw.http_port}/c/secure-api/echo", headers=headers, timeout=10)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
