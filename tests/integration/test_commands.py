"""Command connections with real processes: the tool gets the credentials and the caller never
sees them, arguments the policy refuses never run, a tool that outlives its timeout is killed with
its children, output past the cap is cut, and every run is in the audit trail."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import BINARY, gatehouse

TOOL = Path(__file__).parent / "tools" / "fake_tool.py"
TOKEN_SECRET = "tool-" + secrets.token_hex(12)
FILE_SECRET = "key-" + secrets.token_hex(12)


def command_config(workdir: Path, extra_rules: str = "") -> str:
    key_file = workdir / "tool.key"
    key_file.write_text(FILE_SECRET + "\n")
    return f"""
http:
  listen: 127.0.0.1:HTTP_LISTEN_PORT
reviews:
  approvers: [approvers]
connections:
  - name: fake-tool
    type: command
    command:
      executable: {sys.executable}
      args: [{TOOL}]
      environment:
        HOME: /nonexistent
      secrets:
        TOOL_TOKEN: env:TOOL_TOKEN
      secret_files:
        TOOL_KEY_FILE: file:{key_file}
      timeout_seconds: 1
      max_output_bytes: 65536
      forbidden_options: [--config-file, -c]
    allow:
      groups: [dev]
policy:
  rules:
    - name: tool-reads
      connections: [fake-tool]
      effect: allow
      command:
        args: ["show *", "echo", "spawn *", "flood", "fail", "report *", "slow"]
    - name: no-exec
      effect: deny
      command:
        args: ["exec *"]
    - name: deletes-need-approval
      effect: review
      command:
        args: ["delete *"]
    - name: pii
      effect: mask
      connections: [fake-tool]
      detectors: [email, ssn]
      strategy: redact
{extra_rules}
"""


@pytest.fixture
def gw(gateway_factory, workdir):
    return gateway_factory(command_config(workdir), env={"TOOL_TOKEN": TOKEN_SECRET})


def token(gw, subject="alice", groups="dev", actor: str | None = "claude-code") -> str:
    args = ["dev", "token", "--subject", subject, "--groups", groups]
    if actor:
        args += ["--actor", actor]
    return gw.cli(*args, check=True).stdout.strip()


def run(gw, *args: str, who: str | None = None, stdin: str | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    command = [*(["--input"] if stdin is not None else []), "--config", str(gw.config), "--token", who or token(gw), "fake-tool", "--", *args]
    return gatehouse("exec", *command, input=stdin) if stdin is not None else gatehouse("exec", *command)


def exec_json(gw, args: list[str], who: str | None = None, **extra) -> requests.Response:
    return requests.post(gw.http_url + "/c/fake-tool/exec", json={"args": args, **extra},
                         headers={"Authorization": f"Bearer {who or token(gw)}"}, timeout=60)


def events_of(gw, kind: str, timeout: float = 5.0) -> list[dict]:
    deadline = time.time() + timeout
    while True:
        found = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == kind]
        if found or time.time() > deadline:
            return found
        time.sleep(0.1)


def test_the_tool_gets_the_credentials_and_the_caller_never_sees_them(gw):
    result = run(gw, "show", "--all", "a b")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "args: --all a b", "arguments arrive as given, no shell in between"
    assert lines[1] == "token: [credential]" and lines[2] == "key file: [credential]", "the tool saw the secrets; the caller sees placeholders"
    assert lines[3] == "home: /nonexistent", "only the configured environment reaches the tool"
    assert "contact: [redacted], ssn [redacted]" in result.stderr, "output is masked by the policy's detectors"
    for text in (result.stdout, result.stderr):
        assert TOKEN_SECRET not in text and FILE_SECRET not in text

    [request] = events_of(gw, "command.exec")
    assert request["principal"]["subject"] == "alice" and request["principal"]["actors"][0]["subject"] == "claude-code"
    assert request["connection"] == "fake-tool"
    assert request["operation"]["text"].endswith("fake_tool.py show --all 'a b'")
    assert request["decision"]["rule"] == "tool-reads"
    [outcome] = events_of(gw, "command.result")
    assert outcome["outcome"]["status"] == "exited 0" and outcome["outcome"]["durationMicros"] > 0
    assert "[redacted]" in json.loads(outcome["payload"])["stderr"]
    trail = gw.cli("audit", "list", "--json", check=True).stdout
    assert TOKEN_SECRET not in trail and FILE_SECRET not in trail and "jane.doe@example.com" not in trail


def test_input_exit_status_and_intent(gw):
    echoed = run(gw, "echo", stdin="hello\n")
    assert echoed.returncode == 0 and echoed.stdout == "HELLO\n"
    failed = run(gw, "fail")
    assert failed.returncode == 3 and "something went wrong" in failed.stderr
    r = exec_json(gw, ["report", "daily"], intent="check the daily numbers")
    assert r.status_code == 200 and r.json()["exit_code"] == 0 and r.json()["stdout"] == "report: done\n"
    reports = [e for e in events_of(gw, "command.exec") if "report daily" in e["operation"]["text"]]
    assert reports and reports[0]["operation"]["intent"] == "check the daily numbers"


def test_arguments_the_policy_refuses_never_run(gw):
    denied = run(gw, "exec", "rm", "-rf", "/")
    assert denied.returncode == 1 and "rule no-exec denies command 'exec rm -rf /'" in denied.stderr
    unlisted = exec_json(gw, ["drop-everything"])
    assert unlisted.status_code == 403 and unlisted.json()["rule"] == "policy:allow-list"
    for forbidden in (["show", "--config-file=/etc/passwd"], ["show", "--config-f", "x"], ["show", "-vc", "x"]):
        r = exec_json(gw, forbidden)
        assert r.status_code == 403 and r.json()["rule"] == "connection:fake-tool:options", forbidden
    bad = exec_json(gw, ["show", "a\u0000b"])
    assert bad.status_code == 400
    outsider = exec_json(gw, ["show"], who=token(gw, subject="mallory", groups="sales"))
    assert outsider.status_code == 403 and outsider.json()["rule"] == "connection:fake-tool:allow"
    refused = [e for e in events_of(gw, "command.exec") if e["decision"]["effect"] == "deny"]
    assert {e["decision"]["rule"] for e in refused} >= {"no-exec", "policy:allow-list", "connection:fake-tool:allow"}
    assert not events_of(gw, "command.result", timeout=0.5), "nothing ran"
    assert exec_json(gw, ["show", "--", "-c"]).status_code == 200, "after -- it is an operand"


def test_a_tool_that_outlives_its_timeout_is_killed_with_its_children(gw, workdir):
    marker = workdir / "child-alive"
    started = time.time()
    r = exec_json(gw, ["spawn", str(marker)])
    assert r.status_code == 200 and r.json()["timed_out"] is True and "killed with its children" in r.json()["error"]
    assert time.time() - started < 5
    time.sleep(3)
    assert not marker.exists(), "the child the tool started was killed too"
    [outcome] = events_of(gw, "command.result")
    assert outcome["outcome"]["status"] == "timed out" and outcome["outcome"]["errorCode"] == "timeout"
    assert run(gw, "spawn", str(marker)).returncode == 124


def test_output_larger_than_the_cap_is_cut_and_said(gw):
    r = exec_json(gw, ["flood"])
    body = r.json()
    assert r.status_code == 200 and body["output_truncated"] is True
    assert len(body["stdout"]) == 65536 and "output passed 65536 bytes" in body["error"]
    [outcome] = events_of(gw, "command.result")
    assert outcome["outcome"]["errorCode"] == "output-too-large" and outcome["payloadTruncated"] is True


def test_a_run_the_policy_sends_to_review_waits_for_approval(gw):
    process = subprocess.Popen(
        [str(BINARY), "exec", "--config", str(gw.config), "--token", token(gw), "fake-tool", "--", "delete", "old"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bob = token(gw, subject="bob", groups="approvers", actor=None)
    deadline = time.time() + 15
    while True:
        pending = requests.get(gw.url + "/v1/reviews?state=pending", headers={"Authorization": f"Bearer {bob}"}, timeout=10).json()["reviews"]
        if pending:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    [review] = pending
    assert review["operation"].endswith("fake_tool.py delete old")
    assert gatehouse("reviews", "approve", review["id"], "--config", str(gw.config), "--token", bob).returncode == 0
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out == "delete: done\n", err
    [request] = [e for e in events_of(gw, "command.exec") if "delete old" in e["operation"]["text"]]
    assert request["decision"]["rule"] == f"review:{review['id']}"


def test_output_can_stream_as_the_tool_writes_it(gw):
    """With Accept: application/x-ndjson the output arrives piece by piece, still scrubbed and
    masked (a credential or an email split across two pieces included), then how the run ended."""
    started = time.time()
    with requests.post(gw.http_url + "/c/fake-tool/exec", json={"args": ["slow"]}, stream=True, timeout=60,
                       headers={"Authorization": f"Bearer {token(gw)}", "Accept": "application/x-ndjson"}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
        lines = []
        for raw in r.iter_lines():
            lines.append((time.time() - started, json.loads(raw)))
    pieces = [entry for _, entry in lines if "data" in entry]
    assert lines[0][0] < lines[-1][0] - 0.3, "the first piece came before the tool had finished"
    stdout = "".join(p["data"] for p in pieces if p["stream"] == "stdout")
    assert stdout == "first line\ntoken [credential]\nmail [redacted]\n", stdout
    assert TOKEN_SECRET not in json.dumps(lines)
    ending = lines[-1][1]
    assert ending["exit_code"] == 0 and ending["timed_out"] is False
    [outcome] = events_of(gw, "command.result")
    assert json.loads(outcome["payload"])["stdout"] == stdout
    # The CLI streams too.
    cli = run(gw, "slow")
    assert cli.returncode == 0 and cli.stdout == stdout
