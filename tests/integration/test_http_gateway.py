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

from conftest import REPO, eventually, free_port

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
    # Another process holds the write lock of the trail's tables: events still reach the journal,
    # but once they have waited past the busy timeout to be indexed, requests are refused.
    import sqlite3

    holder = sqlite3.connect(str(workdir / "state" / "audit.sqlite"), timeout=1)
    holder.execute("BEGIN IMMEDIATE")
    try:
        def read():
            return requests.get(gw.http_url + "/c/config-api/config", headers=headers, timeout=60)

        assert eventually(read, lambda r: r.status_code != 200).status_code == 503
        r = requests.put(gw.http_url + "/c/config-api/config/banner", headers=headers, data='"changed"', timeout=60)
        assert r.status_code == 503
        assert r.headers["Content-Type"] == "application/problem+json"
    finally:
        holder.rollback()
        holder.close()
    r = eventually(lambda: requests.get(gw.http_url + "/c/config-api/config/banner", headers=headers, timeout=30),
                   lambda r: r.status_code == 200)
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


# --- Inline masking of responses -------------------------------------------------------------------

RECORDS = [
    {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "card": "4111 1111 1111 1111", "ssn": "123-45-6789",
     "customer_ref": "CUST-0001",
     "billing": {"card_number": 4012888888881881, "contact": {"email": "billing@example.com"}}},
    {"id": 2, "name": "Grace Hopper", "email": "grace@example.com", "card": "5500 0000 0000 0004", "ssn": "234-56-7890",
     "customer_ref": "CUST-0002", "notes": "card 4111-1111-1111-1111 on file; SSN 123-45-6789 verified"},
]
# Every sensitive value above, as it would leak.
UNMASKED = ["ada@example.com", "grace@example.com", "billing@example.com", "4111 1111 1111 1111", "5500 0000 0000 0004",
            "4012888888881881", "4111-1111-1111-1111", "123-45-6789", "234-56-7890", "CUST-0001", "CUST-0002"]
# What the detectors find in any text (emails are a JSON-path rule here).
DETECTED = [v for v in UNMASKED if "@" not in v and not v.startswith("CUST")]


class RecordsAPI:
    """A customer-records upstream that answers the ways a real one might: JSON trickling out a few
    bytes at a time, NDJSON, CSV, gzip whatever was asked for, malformed JSON mid-stream, binary."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        api = self
        self.accept_encodings: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def trickle(self, status: int, content_type: str, body: bytes, piece: int = 5, headers: dict | None = None,
                        length: bool = True) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(body), piece):
                    data = body[start:start + piece]
                    self.wfile.write(data if length else b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    time.sleep(0.001)
                if not length:
                    self.wfile.write(b"0\r\n\r\n")

            def do_GET(self):  # noqa: N802
                import gzip

                api.accept_encodings.append(self.headers.get("Accept-Encoding"))
                path = self.path.split("?")[0]
                document = json.dumps({"customers": RECORDS}).encode()
                if path == "/customers":
                    self.trickle(200, "application/json", document,
                                 headers={"ETag": '"v1"', "X-Account-Owner": "SSN 123-45-6789"})
                elif path == "/customers.ndjson":
                    lines = b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)
                    self.trickle(200, "application/x-ndjson", lines, piece=7, length=False)
                elif path == "/customers.csv":
                    rows = "id,name,email,card,ssn\r\n" + "".join(
                        f"{r['id']},{r['name']},{r['email']},{r['card']},{r['ssn']}\r\n" for r in RECORDS)
                    self.trickle(200, "text/csv; charset=utf-8", rows.encode(), piece=6, length=False)
                elif path == "/customers.gz":
                    # Compressed whatever the request asked for.
                    body = gzip.compress(document)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif path == "/broken":
                    good = json.dumps(RECORDS[0])
                    # A missing comma after the second record's email, then more data.
                    body = ('{"customers": [' + good + ', {"email": "grace@example.com" "card": "5500 0000 0000 0004"}]}').encode()
                    self.trickle(200, "application/json", body, piece=16, length=False)
                elif path == "/many":
                    # A large JSON array, generated as it is sent.
                    count = int(self.path.split("count=")[1])
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    batch = ", ".join(json.dumps(r) for r in RECORDS * 50).encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(b"[") + len(batch), b"[" + batch))
                    for _ in range(count // 100 - 1):
                        self.wfile.write(b"%x\r\n, %s\r\n" % (len(batch) + 2, batch))
                    self.wfile.write(b"1\r\n]\r\n0\r\n\r\n")
                elif path == "/blob":
                    self.trickle(200, "application/octet-stream", b"4111 1111 1111 1111\x00\x01", piece=64)
                else:
                    self.trickle(404, "application/json", b'{"error": "not found"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def records_api():
    api = RecordsAPI()
    yield api
    api.close()


def masking_config(sample_api: str, records: RecordsAPI) -> str:
    return http_config(sample_api) + f"""
  - name: records-api
    type: http
    upstream: {records.url}
    allow:
      groups: [dev]
  - name: records-raw
    type: http
    upstream: {records.url}
    allow:
      groups: [dev]
policy:
  rules:
    - name: pii
      effect: mask
      connections: [config-api, records-api]
      detectors: [card, ssn]
      strategy: partial
    # Rules by JSON path are scoped to the JSON endpoints: a response in another representation
    # would be withheld (a path mask cannot be applied to CSV).
    - name: pii-emails
      effect: mask
      connections: [config-api, records-api]
      http:
        paths: ["/customers", "/customers.ndjson", "/export/**", "/many", "/broken"]
      json_paths: ["$..email"]
      strategy: partial
    - name: hashed-refs
      effect: mask
      connections: [records-api]
      http:
        paths: ["/customers", "/customers.ndjson", "/export/**", "/many", "/broken"]
      json_paths: ["$..customer_ref"]
      strategy: hash
"""


@pytest.fixture
def masking_gw(gateway_factory, sample_api, records_api):
    return gateway_factory(masking_config(sample_api, records_api), env={"SAMPLE_API_KEY": API_KEY})


def assert_nothing_unmasked(text: str, where: str, values: list[str] = UNMASKED) -> None:
    for value in values:
        assert value not in text, f"{value!r} leaked in {where}"


def test_curl_sees_json_masked_by_path_and_by_detector(masking_gw, records_api):
    auth = f"Authorization: Bearer {token(masking_gw)}"
    result = curl("-D", "-", "--compressed", "-H", auth, masking_gw.http_url + "/c/records-api/customers")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition("\n\n")  # text mode: line ends are \n
    assert head.startswith("HTTP/1.1 200"), head
    assert_nothing_unmasked(result.stdout, "the response")
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head.splitlines()[1:]}
    assert "content-length" not in headers and headers.get("transfer-encoding") == "chunked"
    assert "etag" not in headers, "the ETag named the unmasked body"
    assert headers["x-account-owner"] == "SSN ***-**-6789", "header values go through the detectors too"
    assert records_api.accept_encodings[-1] == "identity", "curl asked for gzip; the gateway asked for identity"

    ada, grace = json.loads(body)["customers"]
    # Emails by path (partial keeps the end), wherever they are nested.
    assert ada["email"] == "**********e.com" and grace["email"] == "************e.com"
    assert ada["billing"]["contact"]["email"].endswith(".com") and "billing" not in ada["billing"]["contact"]["email"]
    # Cards and SSNs by detector, the last four kept; a card stored as a JSON number becomes a string.
    assert ada["card"] == "**** **** **** 1111" and grace["card"] == "**** **** **** 0004"
    assert ada["ssn"] == "***-**-6789" and grace["ssn"] == "***-**-7890"
    assert ada["billing"]["card_number"] == "************1881"
    assert grace["notes"] == "card ****-****-****-1111 on file; SSN ***-**-6789 verified"
    # Everything else as sent.
    assert (ada["id"], ada["name"], grace["name"]) == (1, "Ada Lovelace", "Grace Hopper")

    # The demo API's customer export through the credentialed connection: same rule.
    person = f"Authorization: Bearer {token(masking_gw, actor=None)}"
    export = curl("-H", person, masking_gw.http_url + "/c/config-api/export/customers")
    customers = json.loads(export.stdout)["customers"]
    assert [c["card"] for c in customers] == ["**** **** **** 1111", "**** **** **** 0004", "**** **** ***0 009"]
    assert all(c["email"].endswith(".com") and "@" not in c["email"] for c in customers)
    assert "ada@example.com" not in export.stdout and "4111 1111 1111 1111" not in export.stdout


def test_the_audit_trail_holds_only_what_the_client_saw(masking_gw):
    headers = {"Authorization": f"Bearer {token(masking_gw)}"}
    for path in ("/customers", "/customers.ndjson", "/customers.csv"):
        r = requests.get(masking_gw.http_url + "/c/records-api" + path, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        assert_nothing_unmasked(r.text, path, DETECTED if path.endswith(".csv") else UNMASKED)
    responses = [e["record"] for e in wait_for_events(masking_gw, "http.response", 3)]
    assert len(responses) == 3
    for response in responses:
        assert response["decision"]["effect"] == "mask", response["decision"]
        assert response["decision"]["rule"].split(",")[0] == "pii"
        assert "the request was allowed by rule" in response["decision"]["reason"]
        body = json.loads(response["payload"])["body"]
        assert "***-**-6789" in body, "the masked body is recorded"
    assert responses[0]["decision"]["rule"] == "pii,pii-emails,hashed-refs"
    requests_ = [e["record"] for e in masking_gw.events() if e["record"]["operation"]["kind"] == "http.request"]
    assert all(r["decision"]["effect"] == "allow" for r in requests_), "request events are unchanged"

    # CSV has no JSON paths, so its emails (masked by path in JSON only) are the one exception.
    assert_nothing_unmasked(json.dumps(masking_gw.events()), "the audit events", DETECTED)
    assert_nothing_unmasked(json.dumps(responses[:2]), "the JSON responses' events")
    assert_nothing_unmasked(masking_gw.cli("sessions", "list", check=True).stdout, "the session list")
    state = Path(masking_gw.workdir) / "state"
    for name in ("audit.sqlite", "audit.sqlite-wal"):
        if (state / name).exists():
            assert_nothing_unmasked((state / name).read_bytes().decode("latin-1"), name, DETECTED)


def test_csv_and_ndjson_are_masked_across_chunk_boundaries(masking_gw):
    headers = {"Authorization": f"Bearer {token(masking_gw)}"}
    csv = requests.get(masking_gw.http_url + "/c/records-api/customers.csv", headers=headers, timeout=30)
    assert csv.headers["Content-Type"] == "text/csv; charset=utf-8"
    # The upstream sends 6-byte chunks, so every card and SSN arrives split; emails are a JSON-path
    # rule and CSV has no paths.
    assert csv.text.splitlines() == [
        "id,name,email,card,ssn",
        "1,Ada Lovelace,ada@example.com,**** **** **** 1111,***-**-6789",
        "2,Grace Hopper,grace@example.com,**** **** **** 0004,***-**-7890",
    ]
    ndjson = requests.get(masking_gw.http_url + "/c/records-api/customers.ndjson", headers=headers, timeout=30)
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [line["email"] for line in lines] == ["**********e.com", "************e.com"]
    assert [line["ssn"] for line in lines] == ["***-**-6789", "***-**-7890"]
    assert_nothing_unmasked(ndjson.text, "NDJSON")


def test_keyed_hash_gives_the_same_masked_value_across_requests(masking_gw):
    headers = {"Authorization": f"Bearer {token(masking_gw)}"}
    first = requests.get(masking_gw.http_url + "/c/records-api/customers", headers=headers, timeout=30).json()
    second = requests.get(masking_gw.http_url + "/c/records-api/customers.ndjson", headers=headers, timeout=30)
    refs = [c["customer_ref"] for c in first["customers"]]
    again = [json.loads(line)["customer_ref"] for line in second.text.splitlines()]
    assert all(ref.startswith("h:") and len(ref) == 18 for ref in refs), refs
    assert refs == again, "the same input gives the same hash, whatever response it is in"
    assert refs[0] != refs[1]


def test_large_masked_responses_stream_with_bounded_memory(masking_gw):
    """About 24 MB of customer records, generated faster than the gateway masks them: the gateway
    holds one value at a time and reads the upstream only as fast as it sends, never the body."""
    auth = f"Authorization: Bearer {token(masking_gw)}"
    count = 100_000
    with RSSMonitor(masking_gw.process.pid) as memory:
        result = subprocess.run(
            ["curl", "-sS", "--limit-rate", "20M", "-H", auth, masking_gw.http_url + f"/c/records-api/many?count={count}"],
            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) > 20_000_000
    records = json.loads(result.stdout)
    assert len(records) == count
    assert records[-1]["ssn"] == "***-**-7890" and records[-1]["email"] == "************e.com"
    for value in DETECTED + ["ada@example.com", "CUST-0001"]:
        assert value.encode() not in result.stdout, value
    # Well under the body's size: buffering it (masked or not) would show.
    assert memory.growth < 8 * 1024, f"gateway memory grew by {memory.growth} KiB while masking"


def test_unreadable_responses_are_withheld_when_masks_apply(masking_gw):
    headers = {"Authorization": f"Bearer {token(masking_gw)}", "Accept-Encoding": "gzip"}
    r = requests.get(masking_gw.http_url + "/c/records-api/customers.gz", headers=headers, timeout=30)
    assert r.status_code == 502 and r.headers["Content-Type"] == "application/problem+json"
    problem = r.json()
    assert "could not be masked" in problem["detail"] and "gzip" in problem["detail"]
    assert problem["rule"] == "pii" and problem["connection"] == "records-api"
    assert_nothing_unmasked(r.text, "the refusal")
    r = requests.get(masking_gw.http_url + "/c/records-api/blob", headers=headers, timeout=30)
    assert r.status_code == 502 and "application/octet-stream" in r.json()["detail"]
    assert b"4111" not in r.content
    # Without mask rules the same gzip response passes untouched: the refusal is the masking's.
    raw = requests.get(masking_gw.http_url + "/c/records-raw/customers.gz", headers=headers, timeout=30)
    assert raw.status_code == 200 and raw.headers["Content-Encoding"] == "gzip"
    assert raw.json()["customers"][0]["email"] == "ada@example.com"

    outcomes = [e["record"] for e in wait_for_events(masking_gw, "http.response", 3)]
    withheld = outcomes[:2]
    assert [(o["outcome"]["status"], o["outcome"]["errorCode"]) for o in withheld] == [
        ("502", "response-unmaskable"), ("502", "response-unmaskable")]
    assert "gzip" in withheld[0]["outcome"]["error"]
    assert withheld[0]["decision"]["effect"] == "deny" and withheld[0]["decision"]["rule"] == "pii"
    assert outcomes[2]["decision"]["effect"] == "allow"


def test_malformed_json_cuts_the_response_and_is_recorded(masking_gw):
    auth = f"Authorization: Bearer {token(masking_gw)}"
    result = subprocess.run(["curl", "-sS", "-H", auth, masking_gw.http_url + "/c/records-api/broken"],
                            capture_output=True, timeout=60)
    assert result.returncode == 18, "curl: transfer closed with outstanding read data (an aborted body)"
    body = result.stdout.decode(errors="replace")
    assert body.startswith('{"customers": [{"id": 1'), body
    assert "**** **** **** 1111" in body, "what was masked before the error went out"
    assert_nothing_unmasked(body, "the cut response")
    [response] = [e["record"] for e in wait_for_events(masking_gw, "http.response")]
    assert response["outcome"]["errorCode"] == "masking-failed"
    assert "malformed JSON" in response["outcome"]["error"]
    assert response["decision"]["effect"] == "mask"
    assert_nothing_unmasked(response["payload"], "the recorded cut response")
