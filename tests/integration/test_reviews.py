"""Just-in-time approval end to end: a statement or request the policy sends to review waits in a
real client (psql, psycopg, curl) until another process approves or denies it through
`gatehouse reviews`, or until the review times out; approvals are bound to the exact operation,
identity and connection; every step lands in the audit trail with who took it."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests

from conftest import free_port, gatehouse
from test_http_gateway import API_KEY, sample_api  # noqa: F401 - the sample API fixture
from test_postgres_gateway import token

POLICY = """
policy:
  rules:
    - name: deletes-need-approval
      effect: review
      sql:
        kinds: [delete]
    - name: truncate-needs-two
      effect: review
      approvals: 2
      sql:
        kinds: [truncate]
    - name: http-deletes-need-approval
      effect: review
      http:
        methods: [DELETE]
"""


class Webhook:
    """A chat tool's incoming webhook on loopback: keeps what it is sent."""

    def __init__(self):
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def config(pg, sample_api: str, webhook_url: str, timeout: int = 60) -> str:
    connections = "".join(
        f"""
  - name: {name}
    type: postgres
    upstream: postgres://127.0.0.1:{pg.port}/app
    username: gh_scram
    password: env:GH_SCRAM_PASSWORD
    allow:
      groups: [dev]
"""
        for name in ("app", "other")
    )
    return f"""
postgres:
  listen: 127.0.0.1:PG_LISTEN_PORT
http:
  listen: 127.0.0.1:HTTP_LISTEN_PORT
reviews:
  approvers: [approvers]
  timeout_seconds: {timeout}
  webhook:
    url: {webhook_url}
connections:{connections}
  - name: config-api
    type: http
    upstream: {sample_api}
    credential:
      header: X-Api-Key
      value: env:SAMPLE_API_KEY
    allow:
      groups: [dev]
{POLICY}
"""


@pytest.fixture
def gw(pg, gateway_factory, sample_api, webhook):  # noqa: F811
    return gateway_factory(config(pg, sample_api, webhook.url),
                           env={"GH_SCRAM_PASSWORD": pg.passwords["gh_scram"], "SAMPLE_API_KEY": API_KEY})


@pytest.fixture
def items(pg):
    """A table of its own per test, so held deletes never touch the shared sample data."""
    name = "held_" + secrets.token_hex(4)
    pg.psql(f"CREATE TABLE {name} (id int PRIMARY KEY, note text); INSERT INTO {name} SELECT g, 'item ' || g FROM generate_series(1, 5) g",
            user="gh_scram")
    return name


def approver(gw, subject="bob", groups="approvers") -> str:
    return token(gw, subject=subject, groups=groups, actor=None)


def reviews_cli(gw, who: str, *args: str) -> subprocess.CompletedProcess:
    return gatehouse("reviews", *args, "--config", str(gw.config), "--token", who)


def pending(gw, who: str | None = None) -> list[dict]:
    r = requests.get(gw.url + "/v1/reviews?state=pending", headers={"Authorization": f"Bearer {who or approver(gw)}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["reviews"]


def wait_for_review(gw, count: int = 1, timeout: float = 15.0, who: str | None = None) -> list[dict]:
    who = who or approver(gw)
    deadline = time.time() + timeout
    while True:
        found = pending(gw, who)
        if len(found) >= count:
            return found
        assert time.time() < deadline, f"no review appeared; log: {gw.log_text()[-2000:]}"
        time.sleep(0.1)


def start_psql(gw, script: str, subject="alice", groups="dev", actor: str | None = "claude-code", dbname="app") -> subprocess.Popen:
    env = {**os.environ, "PGPASSWORD": token(gw, subject=subject, groups=groups, actor=actor), "PGCONNECT_TIMEOUT": "10"}
    process = subprocess.Popen(
        ["psql", f"host=127.0.0.1 port={gw.pg_port} dbname={dbname} user={subject} sslmode=disable", "-X", "-At", "-f", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    process.stdin.write(script)
    process.stdin.close()
    return process


def finish(process: subprocess.Popen, timeout: float = 30) -> tuple[str, str]:
    process.wait(timeout=timeout)
    return process.stdout.read(), process.stderr.read()


def kinds_for(gw, review_id: str) -> list[tuple[str, str | None]]:
    """The review's steps in the trail, with who took each."""
    return [(e["record"]["operation"]["kind"], (e["record"].get("principal") or {}).get("subject"))
            for e in gw.events() if e["record"]["operation"]["kind"].startswith("review.")
            and e["record"]["operation"]["text"].startswith(f"review {review_id} ")]


def wait_for_steps(gw, review_id: str, last: str, timeout: float = 5.0) -> list[tuple[str, str | None]]:
    deadline = time.time() + timeout
    while True:
        steps = kinds_for(gw, review_id)
        if any(kind == last for kind, _ in steps) or time.time() > deadline:
            return steps
        time.sleep(0.1)


def test_a_held_delete_runs_once_another_process_approves_it(gw, pg, items, webhook):
    process = start_psql(gw, f"/* intent: remove a stale item */ DELETE FROM {items} WHERE id = 1;\nSELECT count(*) FROM {items};\n")
    [review] = wait_for_review(gw)
    assert review["requester"] == "alice" and review["agent"] == "claude-code"
    assert review["operation"] == f"/* intent: remove a stale item */ DELETE FROM {items} WHERE id = 1;"
    assert review["intent"] == "remove a stale item" and review["rule"] == "deletes-need-approval"
    assert process.poll() is None, "psql waits for the decision"
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5", "nothing ran before the approval"

    shown = reviews_cli(gw, approver(gw), "show", review["id"])
    assert shown.returncode == 0 and review["digest"] in shown.stdout
    approved = reviews_cli(gw, approver(gw), "approve", review["id"], "--comment", "fine", "--digest", review["digest"])
    assert approved.returncode == 0, approved.stderr
    out, err = finish(process)
    assert out.splitlines() == ["DELETE 1", "4"], err
    # The session's replay shows each step where it happened, with who took it.
    [connect] = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "pg.connect"]
    replay = gw.cli("sessions", "replay", connect["session"], check=True).stdout
    assert f"review.requested by agent claude-code for alice: review {review['id']} requested" in replay
    assert f"review.approved by bob: review {review['id']} approved" in replay
    assert f"NOTICE:  waiting for approval: review {review['id']}, approve with `gatehouse reviews approve {review['id']}`" in err
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "4"

    steps = wait_for_steps(gw, review["id"], "review.executed")
    assert ("review.requested", "alice") in steps and ("review.approved", "bob") in steps and ("review.executed", "alice") in steps
    [statement] = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.query"
                   and e["record"]["operation"]["text"].startswith("/* intent: remove")]
    assert statement["decision"]["effect"] == "allow" and statement["decision"]["rule"] == f"review:{review['id']}"
    assert "approved by bob" in statement["decision"]["reason"]
    # The chat tool heard of it, with links that decide nothing when opened.
    deadline = time.time() + 5
    while not [m for m in webhook.received if m["review"]["id"] == review["id"]] and time.time() < deadline:
        time.sleep(0.1)
    [message] = [m for m in webhook.received if m["review"]["id"] == review["id"]]
    assert review["id"] in message["text"] and "DELETE FROM" in message["text"]
    buttons = message["blocks"][-1]["elements"]
    assert [b["text"]["text"] for b in buttons] == ["Approve", "Deny"]
    assert buttons[0]["url"] == f"{gw.url}/v1/reviews/{review['id']}/approve"
    assert "decides nothing" in requests.get(buttons[1]["url"], timeout=10).text


def test_a_denial_returns_42501_with_the_reason_and_the_session_goes_on(gw, pg, items):
    process = start_psql(gw, f"DELETE FROM {items} WHERE id = 2;\nSELECT 'still here';\n")
    [review] = wait_for_review(gw)
    denied = reviews_cli(gw, approver(gw), "deny", review["id"], "--reason", "use the archive job instead")
    assert denied.returncode == 0, denied.stderr
    out, err = finish(process)
    assert f"ERROR:  gatehouse: review {review['id']} was denied by bob: use the archive job instead" in err
    assert out.splitlines() == ["still here"]
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5"
    steps = wait_for_steps(gw, review["id"], "review.denied")
    assert steps == [("review.requested", "alice"), ("review.denied", "bob")]
    results = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.result"
               and (e["record"].get("outcome") or {}).get("errorCode") == "42501"]
    assert results, "the refused statement's outcome is recorded"


def test_an_approval_is_for_one_operation_identity_and_connection(gw, pg, items):
    first = start_psql(gw, f"DELETE FROM {items} WHERE id = 3;\nDELETE FROM {items} WHERE id = 4;\n")
    [review] = wait_for_review(gw)
    assert reviews_cli(gw, approver(gw), "approve", review["id"]).returncode == 0
    # The next statement of the same session is held again, under a review of its own.
    deadline = time.time() + 15
    while True:
        again = [r for r in pending(gw) if r["id"] != review["id"]]
        if again:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    [second] = again
    assert second["operation"] == f"DELETE FROM {items} WHERE id = 4;" and second["digest"] != review["digest"]
    assert reviews_cli(gw, approver(gw), "deny", second["id"]).returncode == 0
    out, err = finish(first)
    assert out.splitlines() == ["DELETE 1"], err

    # The same text from another identity, or on another connection, is held again too.
    text = f"DELETE FROM {items} WHERE id = 3;\n"
    for start in (lambda: start_psql(gw, text, subject="dave", actor="claude-code"), lambda: start_psql(gw, text, dbname="other")):
        process = start()
        [held] = wait_for_review(gw)
        assert held["id"] not in (review["id"], second["id"]) and held["digest"] != review["digest"]
        assert reviews_cli(gw, approver(gw), "deny", held["id"], "--reason", "no").returncode == 0
        finish(process)
    # Approving a closed review again is refused.
    reused = reviews_cli(gw, approver(gw, "carol"), "approve", review["id"])
    assert reused.returncode == 1 and "already executed" in reused.stderr


def test_the_requester_cannot_approve_and_two_approvals_are_needed_where_a_rule_says_so(gw, pg, items):
    # Alice is an approver herself, and it is still her request.
    alice = token(gw, subject="alice", groups="dev,approvers", actor=None)
    process = start_psql(gw, f"TRUNCATE {items};\n", groups="dev,approvers", actor=None)
    [review] = wait_for_review(gw)
    assert review["approvals_required"] == 2
    own = reviews_cli(gw, alice, "approve", review["id"])
    assert own.returncode == 1 and "alice requested review" in own.stderr and "cannot decide it" in own.stderr
    agent = reviews_cli(gw, token(gw, subject="bob", groups="approvers", actor="claude-code"), "approve", review["id"])
    assert agent.returncode == 1 and "agents cannot decide reviews" in agent.stderr
    outsider = reviews_cli(gw, token(gw, subject="mallory", groups="dev", actor=None), "approve", review["id"])
    assert outsider.returncode == 1 and f"no review {review['id']}" in outsider.stderr, "someone outside the approver groups cannot even see the review"

    first = reviews_cli(gw, approver(gw), "approve", review["id"])
    assert first.returncode == 0 and "1/2 approvals, waiting for more" in first.stdout
    twice = reviews_cli(gw, approver(gw), "approve", review["id"])
    assert twice.returncode == 1 and "already approved" in twice.stderr
    time.sleep(0.5)
    assert process.poll() is None, "one approval of two runs nothing"
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5"
    second = reviews_cli(gw, approver(gw, "carol"), "approve", review["id"])
    assert second.returncode == 0, second.stderr
    out, err = finish(process)
    assert out.strip() == "TRUNCATE TABLE", err
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "0"
    steps = wait_for_steps(gw, review["id"], "review.executed")
    assert steps == [("review.requested", "alice"), ("review.approved", "bob"), ("review.approved", "carol"), ("review.executed", "alice")]


def test_extended_protocol_statements_are_held_with_their_values(gw, pg, items):
    """psycopg binds parameters: the review shows them, the approval covers exactly them, and a
    denied one fails the way the database would fail it, leaving the connection usable."""
    dsn = f"host=127.0.0.1 port={gw.pg_port} dbname=app user=alice sslmode=disable password={token(gw)}"
    outcome: dict = {}

    def run():
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(f"DELETE FROM {items} WHERE id = %s", (5,))
            outcome["deleted"] = cur.rowcount
            try:
                conn.execute(f"DELETE FROM {items} WHERE id = %s", (4,))
            except psycopg.errors.InsufficientPrivilege as error:
                outcome["denied"] = error.diag.message_primary
            outcome["after"] = conn.execute(f"SELECT count(*) FROM {items}").fetchone()[0]

    thread = threading.Thread(target=run)
    thread.start()
    [review] = wait_for_review(gw)
    assert review["operation"] == f"DELETE FROM {items} WHERE id = $1\n-- parameters: $1='5'"
    assert reviews_cli(gw, approver(gw), "approve", review["id"]).returncode == 0
    deadline = time.time() + 15
    while not (held := [r for r in pending(gw) if r["id"] != review["id"]]):
        assert time.time() < deadline
        time.sleep(0.1)
    assert held[0]["operation"].endswith("$1='4'")
    assert reviews_cli(gw, approver(gw), "deny", held[0]["id"], "--reason", "keep item 4").returncode == 0
    thread.join(timeout=30)
    assert outcome == {"deleted": 1, "denied": f"gatehouse: review {held[0]['id']} was denied by bob: keep item 4", "after": 4}


def test_a_held_statement_never_outlives_its_client(gw, pg, items):
    process = start_psql(gw, f"DELETE FROM {items} WHERE id = 1;\n")
    [review] = wait_for_review(gw)
    process.kill()
    process.wait()
    steps = wait_for_steps(gw, review["id"], "review.abandoned")
    assert ("review.abandoned", "alice") in steps
    late = reviews_cli(gw, approver(gw), "approve", review["id"])
    assert late.returncode == 1 and "already abandoned" in late.stderr
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5"

    # A cancel (psql's Ctrl-C) withdraws the statement: it fails as cancelled, the session goes on.
    env = {**os.environ, "PGPASSWORD": token(gw)}
    with psycopg.connect(f"host=127.0.0.1 port={gw.pg_port} dbname=app user=alice sslmode=disable", autocommit=True,
                         password=env["PGPASSWORD"]) as conn:
        timer = threading.Timer(1.5, conn.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f"DELETE FROM {items} WHERE id = 2")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5"


def test_a_restarted_gateway_closes_what_was_held_and_never_runs_it(gw, pg, items):
    process = start_psql(gw, f"DELETE FROM {items} WHERE id = 1;\n")
    [review] = wait_for_review(gw)
    gw.stop(signal.SIGKILL)
    finish(process)
    gw.start()
    steps = wait_for_steps(gw, review["id"], "review.abandoned")
    assert steps[-1] == ("review.abandoned", "alice")
    shown = reviews_cli(gw, approver(gw), "show", review["id"], "--json")
    assert json.loads(shown.stdout)["close_reason"] == "the gateway restarted while the review was pending"
    assert reviews_cli(gw, approver(gw), "approve", review["id"]).returncode == 1
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5"


def test_http_requests_wait_for_approval_too(gw):
    alice = token(gw, actor="claude-code")
    base = gw.http_url + "/c/config-api/config/"
    requests.put(base + "held-key", data="v", headers={"Authorization": f"Bearer {alice}"}, timeout=10).raise_for_status()

    def curl_delete(key: str) -> subprocess.Popen:
        return subprocess.Popen(["curl", "-sS", "-X", "DELETE", "-H", f"Authorization: Bearer {alice}", "-w", "\n%{http_code}", base + key],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    held = curl_delete("held-key")
    [review] = wait_for_review(gw)
    assert review["operation"] == "DELETE /config/held-key"
    assert reviews_cli(gw, approver(gw), "approve", review["id"]).returncode == 0
    out, _ = finish(held)
    assert out.strip().splitlines()[-1] in ("200", "204")
    assert requests.get(base + "held-key", headers={"Authorization": f"Bearer {alice}"}, timeout=10).status_code == 404

    denied = curl_delete("other-key")
    [review] = wait_for_review(gw)
    assert reviews_cli(gw, approver(gw), "deny", review["id"], "--reason", "not today").returncode == 0
    out, _ = finish(denied)
    body, status = out.strip().rsplit("\n", 1)
    assert status == "403"
    problem = json.loads(body)
    assert problem["detail"] == f"review {review['id']} was denied by bob: not today" and problem["rule"] == f"review:{review['id']}"

    gone = curl_delete("third-key")
    [review] = wait_for_review(gw)
    gone.kill()
    gone.wait()
    steps = wait_for_steps(gw, review["id"], "review.abandoned")
    assert ("review.abandoned", "alice") in steps, "a client that hangs up abandons its request"


def test_timeouts_refuse_the_held_operation_with_the_reason(pg, gateway_factory, sample_api, items):  # noqa: F811
    gw = gateway_factory(config(pg, sample_api, "http://127.0.0.1:9/unreachable", timeout=2),
                         env={"GH_SCRAM_PASSWORD": pg.passwords["gh_scram"], "SAMPLE_API_KEY": API_KEY})
    process = start_psql(gw, f"DELETE FROM {items} WHERE id = 1;\nSELECT 'after';\n")
    out, err = finish(process)
    assert "ERROR:  gatehouse: review r" in err and "expired: no decision within 2 seconds" in err
    assert out.splitlines() == ["after"]
    alice = token(gw)
    r = requests.delete(gw.http_url + "/c/config-api/config/some-key", headers={"Authorization": f"Bearer {alice}"}, timeout=30)
    assert r.status_code == 403 and "expired: no decision within 2 seconds" in r.json()["detail"]
    expired = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "review.expired"]
    assert len(expired) == 2
    # The webhook could not be reached: recorded, and the review went on regardless.
    # (A refused connection is retried until the connect timeout, five seconds.)
    deadline = time.time() + 15
    while not (notified := [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "review.notified"]):
        assert time.time() < deadline, "the failed notification was never recorded"
        time.sleep(0.2)
    assert notified and all(n["outcome"]["status"] == "failed" for n in notified)
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5"


def test_time_boxed_access_is_requested_by_a_person_and_granted_by_an_approver(gw):
    dave = token(gw, subject="dave", groups="contractors", actor=None)
    env = {**os.environ, "PGPASSWORD": dave, "PGCONNECT_TIMEOUT": "10"}
    conninfo = f"host=127.0.0.1 port={gw.pg_port} dbname=app user=dave sslmode=disable"
    refused = subprocess.run(["psql", conninfo, "-X", "-At", "-c", "SELECT 1"], capture_output=True, text=True, env=env, timeout=30)
    assert refused.returncode != 0 and "gatehouse access request app --minutes N" in refused.stderr

    asked = gatehouse("access", "request", "app", "--minutes", "5", "--reason", "incident 42", "--config", str(gw.config), "--token", dave)
    assert asked.returncode == 0, asked.stderr
    [review] = wait_for_review(gw)
    assert review["kind"] == "access" and review["grant_minutes"] == 5 and review["intent"] == "incident 42"
    assert reviews_cli(gw, dave, "approve", review["id"]).returncode == 1, "nobody grants themselves access"
    granted = reviews_cli(gw, approver(gw), "approve", review["id"])
    assert granted.returncode == 0 and "access granted" in granted.stdout
    allowed = subprocess.run(["psql", conninfo, "-X", "-At", "-c", "SELECT 1"], capture_output=True, text=True, env=env, timeout=30)
    assert allowed.returncode == 0 and allowed.stdout.strip() == "1", allowed.stderr
    # Only the connection asked for, and not for agents acting for dave.
    other = subprocess.run(["psql", conninfo.replace("dbname=app", "dbname=other"), "-X", "-At", "-c", "SELECT 1"],
                           capture_output=True, text=True, env=env, timeout=30)
    assert other.returncode != 0
    agent_env = {**env, "PGPASSWORD": token(gw, subject="dave", groups="contractors", actor="claude-code")}
    assert subprocess.run(["psql", conninfo, "-X", "-At", "-c", "SELECT 1"], capture_output=True, text=True, env=agent_env,
                          timeout=30).returncode != 0
    grants = gatehouse("access", "grants", "--config", str(gw.config), "--token", dave)
    assert review["id"] in grants.stdout and "dave" in grants.stdout
    connect = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "pg.connect"
               and (e["record"].get("principal") or {}).get("subject") == "dave" and e["record"]["decision"]["effect"] == "allow"]
    assert connect and connect[0]["decision"]["rule"] == f"grant:{review['id']}"
    assert [k for k, _ in wait_for_steps(gw, review["id"], "review.granted")] == ["review.requested", "review.approved", "review.granted"]

    # An approver ends it early: the session open under it ends at its next statement, and new ones are refused.
    with psycopg.connect(f"host=127.0.0.1 port={gw.pg_port} dbname=app user=dave sslmode=disable", password=dave, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert gatehouse("access", "revoke", review["id"], "--config", str(gw.config), "--token", dave).returncode == 1, "not an approver"
        revoked = gatehouse("access", "revoke", review["id"], "--reason", "done", "--config", str(gw.config), "--token", approver(gw))
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(psycopg.Error, match="has ended"):
            conn.execute("SELECT 1")
    again = subprocess.run(["psql", conninfo, "-X", "-At", "-c", "SELECT 1"], capture_output=True, text=True, env=env, timeout=30)
    assert again.returncode != 0
    assert ("review.revoked", "bob") in wait_for_steps(gw, review["id"], "review.revoked")


def test_a_stopping_gateway_closes_what_is_held_and_records_it(gw, pg, items):
    """SIGTERM while a statement waits: the review is closed as abandoned (recorded before the
    trail is sealed), the client gets its answer instead of hanging, and nothing ran."""
    process = start_psql(gw, f"DELETE FROM {items} WHERE id = 1;\n")
    [review] = wait_for_review(gw)
    assert gw.stop(signal.SIGTERM) == 0
    out, err = finish(process)
    assert "ERROR:  canceling statement due to user request" in err, err
    steps = kinds_for(gw, review["id"])
    assert steps[-1] == ("review.abandoned", "alice")
    abandoned = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "review.abandoned"]
    assert abandoned[-1]["decision"]["reason"] == "the gateway stopped"
    assert pg.psql(f"SELECT count(*) FROM {items}", user="gh_scram").strip() == "5"
    assert gw.cli("audit", "verify").returncode == 0
