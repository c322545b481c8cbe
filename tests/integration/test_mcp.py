"""Gatehouse as an MCP server, driven by the real MCP client from PyPI (`mcp`): initialize, list
tools, a query with a masked column, a blocked statement, a held call approved from another
process, an HTTP request, a command, and an unauthenticated attempt; then the audit events they
left."""
from __future__ import annotations

import asyncio
import json
import secrets
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
import requests
from mcp import Client, Implementation
from mcp.client.streamable_http import streamable_http_client

from conftest import gatehouse
from test_http_gateway import API_KEY, sample_api  # noqa: F401 - the sample API fixture
from test_postgres_gateway import token

TOOL = Path(__file__).parent / "tools" / "fake_tool.py"
TOOL_SECRET = "tool-" + secrets.token_hex(12)


def mcp_config(pg, sample_api: str, workdir: Path) -> str:
    key_file = workdir / "tool.key"
    key_file.write_text("key-" + secrets.token_hex(8))
    return f"""
postgres:
  listen: 127.0.0.1:PG_LISTEN_PORT
http:
  listen: 127.0.0.1:HTTP_LISTEN_PORT
reviews:
  approvers: [approvers]
  timeout_seconds: 60
connections:
  - name: app
    type: postgres
    description: The sample customer database
    upstream: postgres://127.0.0.1:{pg.port}/app
    username: gh_scram
    password: env:GH_SCRAM_PASSWORD
    allow:
      groups: [dev]
  - name: config-api
    type: http
    upstream: {sample_api}
    credential:
      header: X-Api-Key
      value: env:SAMPLE_API_KEY
    allow:
      groups: [dev]
  - name: tool
    type: command
    command:
      executable: {sys.executable}
      args: [{TOOL}]
      secrets:
        TOOL_TOKEN: env:TOOL_TOKEN
      secret_files:
        TOOL_KEY_FILE: file:{key_file}
    allow:
      groups: [dev]
  - name: finance
    type: postgres
    upstream: postgres://127.0.0.1:{pg.port}/app
    username: gh_scram
    password: env:GH_SCRAM_PASSWORD
    allow:
      groups: [finance]
policy:
  rules:
    - name: no-ddl-for-agents
      effect: deny
      agents: ["*"]
      sql:
        kinds: [drop, truncate, alter]
    - name: updates-need-approval
      effect: review
      sql:
        kinds: [update]
    - name: pii
      effect: mask
      columns: [customers.email]
      detectors: [ssn]
"""


@pytest.fixture
def gw(pg, gateway_factory, sample_api, workdir):  # noqa: F811
    return gateway_factory(mcp_config(pg, sample_api, workdir), env={
        "GH_SCRAM_PASSWORD": pg.passwords["gh_scram"], "SAMPLE_API_KEY": API_KEY, "TOOL_TOKEN": TOOL_SECRET})


def client_for(gw, bearer: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=httpx2.Timeout(120))
    return Client(streamable_http_client(gw.http_url + "/mcp", http_client=http), client_info=Implementation(name="test-agent", version="1.2"))


def structured(result) -> dict:
    return result.structured_content or json.loads(result.content[0].text.split("\n", 1)[1])


def test_an_agent_uses_the_companys_resources_through_mcp(gw, pg):
    agent = token(gw, actor="claude-code")

    async def session():
        async with client_for(gw, agent) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {"list_connections", "describe_connection", "query", "http_request", "run_command", "review_status"}
            assert tools["query"].input_schema["properties"]["connection"]["enum"] == ["app"], "only what the caller may use"

            listed = structured(await client.call_tool("list_connections", {}))
            assert [c["name"] for c in listed["connections"]] == ["app", "config-api", "tool"]

            described = structured(await client.call_tool("describe_connection", {"connection": "app"}))
            customers = next(t for t in described["tables"] if t["name"] == "customers")
            email = next(c for c in customers["columns"] if c["name"] == "email")
            assert email["masked"] is True and email["mask_rule"] == "pii"

            rows = await client.call_tool("query", {"connection": "app", "sql": "SELECT id, email FROM customers ORDER BY id LIMIT 2",
                                                    "intent": "look at two customers"})
            result = structured(rows)
            assert not rows.is_error and result["statements"][0]["columns"] == ["id", "email"]
            emails = [row[1] for row in result["statements"][0]["rows"]]
            assert emails == ["[redacted]", "[redacted]"], emails

            blocked = await client.call_tool("query", {"connection": "app", "sql": "DROP TABLE customers"})
            assert blocked.is_error and structured(blocked)["error"]["sqlstate"] == "42501"
            assert "no-ddl-for-agents" in structured(blocked)["error"]["message"]

            other = await client.call_tool("query", {"connection": "finance", "sql": "SELECT 1"})
            assert other.is_error and "no postgres connection named finance" in structured(other)["error"]

            api = structured(await client.call_tool("http_request", {"connection": "config-api", "method": "GET", "path": "/config"}))
            assert api["status"] == 200 and "db.pool_size" in api["body"]

            ran = await client.call_tool("run_command", {"connection": "tool", "args": ["show", "x"], "intent": "see the tool"})
            output = structured(ran)
            assert not ran.is_error and output["exit_code"] == 0
            assert "token: [credential]" in output["stdout"] and TOOL_SECRET not in json.dumps(output)

            refused = await client.call_tool("run_command", {"connection": "tool", "args": 42})
            assert refused.is_error and "array of strings" in structured(refused)["error"]

    asyncio.run(session())
    assert pg.psql("SELECT count(*) FROM customers", user="gh_scram").strip() == "50"

    calls = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "mcp.call"]
    by_text = {c["operation"]["text"].split(":")[0]: c for c in calls}
    assert {"list_connections", "describe_connection", "query", "http_request", "run_command"} <= set(by_text)
    query = next(c for c in calls if "look at two customers" == c["operation"].get("intent"))
    assert query["principal"]["subject"] == "alice" and query["principal"]["actors"][0]["subject"] == "claude-code"
    assert query["client"]["application"] == "mcp test-agent/1.2"
    assert "SELECT id, email FROM customers" in query["operation"]["text"]
    assert "@example" not in (query["payload"] or ""), "the trail keeps the masked result"
    drop = next(c for c in calls if "DROP TABLE" in c["operation"]["text"])
    assert drop["decision"]["effect"] == "deny"
    # The same statements went through the PostgreSQL gateway, recorded there too.
    sql = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.query"]
    assert any(s["operation"]["text"].startswith("/* intent: look at two customers */") for s in sql)


def test_a_held_tool_call_is_approved_from_another_process(gw, pg):
    name = "mcp_held_" + secrets.token_hex(3)
    pg.psql(f"CREATE TABLE {name} (id int, note text); INSERT INTO {name} VALUES (1, 'old')", user="gh_scram")
    agent = token(gw, actor="claude-code")
    bob = token(gw, subject="bob", groups="approvers", actor=None)
    progress: list[str] = []

    def approve_when_held():
        deadline = time.time() + 30
        while time.time() < deadline:
            pending = requests.get(gw.url + "/v1/reviews?state=pending", headers={"Authorization": f"Bearer {bob}"}, timeout=10).json()["reviews"]
            if pending:
                gatehouse("reviews", "approve", pending[0]["id"], "--config", str(gw.config), "--token", bob)
                return
            time.sleep(0.2)

    async def session():
        async with client_for(gw, agent) as client:
            async def on_progress(value, total, message):
                progress.append(message or "")

            threading.Thread(target=approve_when_held, daemon=True).start()
            result = await client.call_tool("query", {"connection": "app", "sql": f"UPDATE {name} SET note = 'new' WHERE id = 1"},
                                            progress_callback=on_progress)
            assert not result.is_error, result
            assert structured(result)["statements"][-1]["command_tag"] == "UPDATE 1"
            assert "waiting for approval: review r" in " ".join(structured(result).get("notices", []))
            held = next(n for n in structured(result)["notices"] if n.startswith("waiting for approval"))
            review_id = held.split("review ")[1].split(",")[0]
            status = structured(await client.call_tool("review_status", {"review": review_id}))
            assert status["state"] == "executed"

    asyncio.run(session())
    assert pg.psql(f"SELECT note FROM {name}", user="gh_scram").strip() == "new"
    assert any(p.startswith("waiting for approval: review r") for p in progress), progress


def test_without_a_valid_token_the_client_is_pointed_at_the_identity_provider(gw):
    r = requests.post(gw.http_url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                      headers={"Accept": "application/json, text/event-stream"}, timeout=10)
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert f'resource_metadata="{gw.http_url}/.well-known/oauth-protected-resource/mcp"' in challenge
    metadata = requests.get(gw.http_url + "/.well-known/oauth-protected-resource/mcp", timeout=10).json()
    assert metadata["resource"] == gw.http_url + "/mcp"
    assert metadata["authorization_servers"] == [f"{gw.url}/dev"]
    bad = requests.post(gw.http_url + "/mcp", json={}, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]

    async def attempt():
        async with client_for(gw, "not-a-token") as client:
            await client.list_tools()

    with pytest.raises(Exception):
        asyncio.run(attempt())
    refused = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "mcp.request"]
    assert refused and all(e["decision"]["effect"] == "deny" and e["outcome"]["status"] == "401" for e in refused)


def test_malformed_json_rpc_gets_a_json_rpc_error(gw):
    agent = token(gw)
    headers = {"Authorization": f"Bearer {agent}", "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    r = requests.post(gw.http_url + "/mcp", data="{not json", headers=headers, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700


def test_a_held_call_never_outlives_its_mcp_client(gw, pg):
    """The client leaves while its UPDATE waits for approval: the review is closed as abandoned,
    and approving it afterwards runs nothing."""
    name = "mcp_gone_" + secrets.token_hex(3)
    pg.psql(f"CREATE TABLE {name} (id int, note text); INSERT INTO {name} VALUES (1, 'old')", user="gh_scram")
    script = f"""
import asyncio, httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
async def main():
    http = httpx2.AsyncClient(headers={{"Authorization": "Bearer {token(gw)}"}}, timeout=httpx2.Timeout(300))
    async with Client(streamable_http_client("{gw.http_url}/mcp", http_client=http)) as client:
        await client.call_tool("query", {{"connection": "app", "sql": "UPDATE {name} SET note = 'new'"}})
asyncio.run(main())
"""
    import subprocess
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bob = token(gw, subject="bob", groups="approvers", actor=None)
    deadline = time.time() + 30
    while not (pending := requests.get(gw.url + "/v1/reviews?state=pending", headers={"Authorization": f"Bearer {bob}"},
                                       timeout=10).json()["reviews"]):
        assert time.time() < deadline and process.poll() is None, process.stderr.read() if process.poll() is not None else "no review"
        time.sleep(0.2)
    process.kill()
    process.wait()
    deadline = time.time() + 10
    while True:
        state = requests.get(gw.url + f"/v1/reviews/{pending[0]['id']}", headers={"Authorization": f"Bearer {bob}"}, timeout=10).json()["state"]
        if state == "abandoned" or time.time() > deadline:
            break
        time.sleep(0.2)
    assert state == "abandoned"
    late = gatehouse("reviews", "approve", pending[0]["id"], "--config", str(gw.config), "--token", bob)
    assert late.returncode == 1
    assert pg.psql(f"SELECT note FROM {name}", user="gh_scram").strip() == "old"


def test_a_result_larger_than_a_tool_result_is_cut_and_the_statement_stopped(gw):
    async def session():
        async with client_for(gw, token(gw, actor=None)) as client:
            started = time.time()
            result = await client.call_tool("query", {"connection": "app", "sql": "SELECT g, repeat('x', 100) FROM generate_series(1, 2000000) g"})
            body = structured(result)
            assert len(body["statements"][0]["rows"]) == 500 and "truncated" in body
            assert body["error"]["sqlstate"] == "57014" and "larger than a tool result" in body["error"]["message"]
            assert time.time() - started < 20, "the statement was stopped, not read to the end"
            # The session is usable for the next call.
            assert structured(await client.call_tool("query", {"connection": "app", "sql": "SELECT 1"}))["statements"][0]["rows"] == [["1"]]

    asyncio.run(session())
