"""The PostgreSQL gateway end to end: real clients, through the gatehouse binary, to a real PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import BINARY, gatehouse


def pg_config(pg) -> str:
    connections = "".join(
        f"""
  - name: app-{method}
    type: postgres
    upstream: postgres://127.0.0.1:{pg.port}/app
    username: gh_{method}
    password: env:GH_{method.upper()}_PASSWORD
    allow:
      groups: [dev]
      agents: [claude-code]
"""
        for method in ("scram", "md5", "plain")
    )
    return f"""
postgres:
  listen: 127.0.0.1:PG_LISTEN_PORT
  max_recorded_rows: 5
# People may run what the gateway cannot classify (the fast-path call test needs it). Kept above
# the connections, which other test files extend.
policy:
  unknown:
    people: allow
connections:{connections}
  - name: restricted
    type: postgres
    upstream: postgres://127.0.0.1:{pg.port}/app
    username: gh_scram
    password: env:GH_SCRAM_PASSWORD
    allow:
      subjects: [bob]
"""


@pytest.fixture
def gw(pg, gateway_factory):
    env = {f"GH_{m.upper()}_PASSWORD": pg.passwords[f"gh_{m}"] for m in ("scram", "md5", "plain")}
    return gateway_factory(pg_config(pg), env=env)


def token(gw, subject="alice", groups="dev", actor: str | None = "claude-code") -> str:
    args = ["dev", "token", "--subject", subject, "--groups", groups]
    if actor:
        args += ["--actor", actor]
    return gw.cli(*args, check=True).stdout.strip()


def psql(gw, sql: str, dbname="app-scram", password: str | None = None, extra: list[str] | None = None, **kw):
    env = {**os.environ, "PGPASSWORD": password if password is not None else token(gw), "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        ["psql", f"host=127.0.0.1 port={gw.pg_port} dbname={dbname} user=alice sslmode=disable",
         "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, *(extra or [])],
        capture_output=True, text=True, env=env, timeout=60, **kw,
    )


def test_each_statement_of_a_multi_statement_query_is_its_own_event(gw):
    """psql -c sends all three statements in one simple Query; the trail holds three statements,
    each with its own result, and the one the server never ran says so."""
    result = psql(gw, "SELECT 1 AS one; /* intent: divide */ SELECT 2/0; DELETE FROM orders WHERE false")
    assert result.returncode != 0 and "division by zero" in result.stderr
    events = gw.events()
    queries = [e for e in events if e["record"]["operation"]["kind"] == "sql.query"]
    assert [q["record"]["operation"]["text"] for q in queries] == [
        "SELECT 1 AS one", "/* intent: divide */ SELECT 2/0", "DELETE FROM orders WHERE false"]
    assert queries[1]["record"]["operation"]["intent"] == "divide"
    deadline = time.time() + 5
    while True:
        results = {e["record"]["operation"]["text"]: e["record"]["outcome"] for e in gw.events()
                   if e["record"]["operation"]["kind"] == "sql.result"}
        if len(results) == 3 or time.time() > deadline:
            break
        time.sleep(0.05)
    first, second, third = (results[f"result of event {q['seq']}"] for q in queries)
    assert first["status"] == "SELECT 1" and first["rows"] == 1
    assert second["errorCode"] == "22012"
    assert third["status"] == "skipped", "the DELETE never ran"


def test_application_name_states_the_intent_of_a_session(gw):
    """`application_name=intent: ...` (at connect, or later with SET) is recorded as the intent of
    every statement that states none of its own in a leading comment."""
    env = {**os.environ, "PGPASSWORD": token(gw), "PGAPPNAME": "intent: tidy up stale sessions"}
    script = (
        "SELECT 1;\n"
        "/* intent: look at one row */ SELECT 2;\n"
        "SET application_name = 'intent: second task';\n"
        "SELECT 3;\n"
        "SET application_name = 'psql';\n"
        "SELECT 4;\n"
    )
    result = subprocess.run(
        ["psql", f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice sslmode=disable", "-X", "-At",
         "-v", "ON_ERROR_STOP=1"],
        input=script, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    records = [e["record"] for e in gw.events()]
    assert records[0]["operation"]["kind"] == "pg.connect"
    assert records[0]["operation"]["intent"] == "tidy up stale sessions"
    intents = {r["operation"]["text"]: r["operation"].get("intent") for r in records if r["operation"]["kind"] == "sql.query"}
    assert intents["SELECT 1;"] == "tidy up stale sessions"
    assert intents["/* intent: look at one row */ SELECT 2;"] == "look at one row"
    assert intents["SELECT 3;"] == "second task"
    assert intents["SELECT 4;"] is None


@pytest.mark.parametrize("method", ["scram", "md5", "plain"])
def test_psql_with_a_token_reaches_the_database_over_every_upstream_login_method(gw, pg, method):
    result = psql(gw, "SELECT count(*) FROM customers", dbname=f"app-{method}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == pg.psql("SELECT count(*) FROM customers").strip()


def test_statements_are_recorded_with_identity_and_results(gw, pg):
    result = psql(gw, "/* intent: count the orders */ SELECT status, count(*) FROM orders GROUP BY status ORDER BY status")
    assert result.returncode == 0, result.stderr

    events = gw.events()
    kinds = [e["record"]["operation"]["kind"] for e in events]
    assert kinds[:3] == ["pg.connect", "sql.query", "sql.result"], kinds
    query, answer = events[1]["record"], events[2]["record"]
    assert query["principal"]["subject"] == "alice"
    assert query["principal"]["actors"][0]["subject"] == "claude-code"
    assert query["connection"] == "app-scram"
    assert query["operation"]["text"].endswith("GROUP BY status ORDER BY status")
    assert query["operation"]["intent"] == "count the orders"
    assert answer["operation"]["text"] == f"result of event {events[1]['seq']}"
    assert answer["outcome"]["status"].startswith("SELECT ")
    rows = json.loads(answer["payload"])
    assert rows["columns"] == ["status", "count"]
    statuses = [line.split("|")[0] for line in result.stdout.split()]
    # max_recorded_rows: 5 keeps the first five rows and says the result was cut.
    assert len(statuses) > 5 and [r[0] for r in rows["rows"]] == statuses[:5]
    assert answer["payloadTruncated"] is True and answer["outcome"]["rows"] == len(statuses)
    import re
    import requests

    metrics = requests.get(gw.url + "/metrics", timeout=5).text
    assert re.search(r'gatehouse_requests_total\{protocol="postgres",decision="allow"\} 1\b', metrics), metrics
    assert re.search(r'gatehouse_sessions_total\{protocol="postgres",decision="allow"\} 1\b', metrics), metrics
    assert re.search(r'gatehouse_request_duration_seconds_count\{protocol="postgres"\} 1\b', metrics), metrics
    # The database password never reaches the trail or the gateway's log.
    assert pg.passwords["gh_scram"] not in gw.cli("audit", "list", "--json").stdout
    assert pg.passwords["gh_scram"] not in gw.log_text()


def test_a_bad_token_or_a_disallowed_person_is_refused_and_recorded(gw):
    bad = psql(gw, "SELECT 1", password="not-a-token")
    assert bad.returncode != 0 and "authentication failed" in bad.stderr

    mallory = psql(gw, "SELECT 1", password=token(gw, subject="mallory", groups="sales", actor=None))
    assert mallory.returncode != 0 and "may not use connection app-scram" in mallory.stderr

    other = psql(gw, "SELECT 1", dbname="restricted")
    assert other.returncode != 0 and "may not use connection restricted" in other.stderr

    unknown = psql(gw, "SELECT 1", dbname="no-such-db")
    assert unknown.returncode != 0 and "is not configured" in unknown.stderr

    refused = [e["record"] for e in gw.events() if e["record"]["decision"]["effect"] == "deny"]
    assert [r["outcome"]["errorCode"] for r in refused] == ["malformed", "42501", "42501", "3D000"]
    assert refused[1]["principal"]["subject"] == "mallory"
    assert not [e for e in gw.events() if e["record"]["operation"]["kind"] == "sql.query"]


def test_psql_meta_commands_transactions_and_copy(gw, pg, workdir):
    script = workdir / "session.sql"
    script.write_text(
        "\\d customers\n"
        "\\dt\n"
        "BEGIN;\n"
        "UPDATE app_config SET value = 'x' WHERE key = (SELECT min(key) FROM app_config);\n"
        "ROLLBACK;\n"
        "CREATE TEMP TABLE t (a int, b text);\n"
        "\\copy t FROM STDIN\n1\tone\n2\ttwo\n\\.\n"
        "SELECT count(*) FROM t;\n"
        "\\copy (SELECT id, email FROM customers ORDER BY id LIMIT 3) TO STDOUT\n"
        "SELECT 1/0;\n"
    )
    env = {**os.environ, "PGPASSWORD": token(gw)}
    through = subprocess.run(
        ["psql", f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice", "-X", "-f", str(script)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    direct = subprocess.run(
        ["psql", pg.dsn(user="gh_scram"), "-X", "-f", str(script)], capture_output=True, text=True, timeout=60,
    )
    assert through.stdout == direct.stdout
    assert "division by zero" in through.stderr
    texts = [e["record"]["operation"]["text"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.query"]
    assert any(t.startswith("COPY t FROM STDIN") or t.startswith("COPY  t FROM STDIN") for t in texts), texts
    assert any(t.startswith("COPY") and "SELECT id, email FROM customers" in t and "TO STDOUT" in t for t in texts), texts
    results = [e["record"]["outcome"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.result"]
    assert any(o.get("errorCode") == "22012" for o in results)
    # COPY FROM STDIN data never escapes the trail: its size is recorded with the statement.
    copies = [o for o in results if (o.get("status") or "").startswith("COPY")]
    # (psql also sends its end-of-data line "\\.\n" as data.)
    assert any(o["status"] == "COPY 2" and o.get("bytes", 0) >= len("1\tone\n2\ttwo\n") for o in copies), copies


def test_psycopg_extended_protocol_parameters_and_copy(gw, pg):
    psycopg = pytest.importorskip("psycopg")
    conninfo = f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice password={token(gw)}"
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT full_name, email FROM customers WHERE id = %s", (7,)).fetchone()
        with psycopg.connect(pg.dsn()) as direct:
            assert row == direct.execute("SELECT full_name, email FROM customers WHERE id = %s", (7,)).fetchone()
        for _ in range(6):  # psycopg prepares server-side after 5 executions
            conn.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (3,)).fetchone()
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE pyt (a int)")
            with conn.cursor().copy("COPY pyt FROM STDIN") as copy:
                for i in range(100):
                    copy.write_row((i,))
        assert conn.execute("SELECT sum(a) FROM pyt").fetchone() == (4950,)
        with conn.cursor().copy("COPY (SELECT a FROM pyt ORDER BY a LIMIT 3) TO STDOUT") as copy:
            assert [bytes(b) for b in copy] == [b"0\n", b"1\n", b"2\n"]
    executes = [e["record"]["operation"]["text"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.execute"]
    assert any("WHERE id = $1" in t and "$1='7'" in t for t in executes), executes
    assert sum("customer_id = $1" in t for t in executes) == 6
    cancels = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "pg.cancel"]
    assert cancels == []


def test_asyncpg_prepared_statements_and_binary_results(gw, pg):
    asyncpg = pytest.importorskip("asyncpg")
    import asyncio

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.pg_port, user="alice", database="app-scram", password=token(gw), ssl=False)
        try:
            statement = await conn.prepare("SELECT id, email FROM customers WHERE id <= $1 ORDER BY id")
            rows = await statement.fetch(3)
            async with conn.transaction():
                await conn.execute("CREATE TEMP TABLE apg (a int)")
                await conn.copy_records_to_table("apg", records=[(1,), (2,)])
            total = await conn.fetchval("SELECT sum(a) FROM apg")
            import io
            out = io.BytesIO()
            await conn.copy_from_query("SELECT a FROM apg ORDER BY a", output=out)
            assert out.getvalue() == b"1\n2\n"
            # asyncpg cancels a query that runs past its timeout (a CancelRequest on a new connection).
            started = asyncio.get_running_loop().time()
            with pytest.raises(asyncio.TimeoutError):
                await conn.execute("SELECT pg_sleep(30)", timeout=1)
            assert asyncio.get_running_loop().time() - started < 15
            assert await conn.fetchval("SELECT 1") == 1
            return [tuple(r) for r in rows], total
        finally:
            await conn.close()

    rows, total = asyncio.run(run())
    assert rows[0][0] == 1 and len(rows) == 3 and total == 3
    executes = [e for e in gw.events() if e["record"]["operation"]["kind"] == "sql.execute"]
    assert any("WHERE id <= $1" in e["record"]["operation"]["text"] for e in executes)


def test_a_cancel_reaches_the_right_backend(gw):
    psycopg = pytest.importorskip("psycopg")
    conninfo = f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice password={token(gw)}"
    with psycopg.connect(conninfo) as conn:
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 20
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    [cancel] = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "pg.cancel"]
    [connect] = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "pg.connect"]
    assert cancel["session"] == connect["session"] and cancel["principal"]["subject"] == "alice"


def test_a_stopping_gateway_answers_the_statement_in_flight_then_ends_sessions(gw):
    """SIGTERM while one client waits for a slow statement and another sits idle: the slow one
    gets its rows (recorded), then both sessions end as PostgreSQL ends them at shutdown (57P01)."""
    psycopg = pytest.importorskip("psycopg")
    conninfo = f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice password={token(gw)}"
    busy = psycopg.connect(conninfo, autocommit=True)
    idle = psycopg.connect(conninfo, autocommit=True)
    answer: dict = {}

    def slow():
        try:
            answer["rows"] = busy.execute("SELECT 42 FROM pg_sleep(1.5)").fetchall()
            busy.execute("SELECT 1")
        except psycopg.Error as error:
            answer["after"] = error
    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    assert gw.stop(signal.SIGTERM) == 0
    thread.join(timeout=30)
    assert answer["rows"] == [(42,)]
    assert isinstance(answer["after"], psycopg.OperationalError)
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    busy.close()
    idle.close()
    events = gw.events()
    [query] = [e for e in events if e["record"]["operation"].get("text") == "SELECT 42 FROM pg_sleep(1.5)"]
    [result] = [e["record"] for e in events if e["record"]["operation"].get("text") == f"result of event {query['seq']}"]
    assert result["outcome"]["rows"] == 1 and result["outcome"]["status"] == "SELECT 1"


def test_pgbench_through_the_gateway_is_recorded_in_full(gw, pg):
    env = {**os.environ, "PGPASSWORD": token(gw)}
    result = subprocess.run(
        ["pgbench", "-h", "127.0.0.1", "-p", str(gw.pg_port), "-U", "alice", "-c", "4", "-t", "25", "-M", "extended", "app-scram"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "number of failed transactions: 0" in result.stdout
    executes = [e for e in gw.events() if e["record"]["operation"]["kind"] == "sql.execute"]
    # The default TPC-B-like script runs 7 statements per transaction (BEGIN ... END).
    assert len(executes) >= 4 * 25 * 7
    assert gw.stop() == 0
    verified = gw.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout


def test_busy_clients_are_ended_between_statements_when_the_gateway_stops(gw):
    """SIGTERM under a pgbench load (simple and pipelined extended protocol): every session ends
    with 57P01 after its statement in flight is answered, none is cut at the grace period, and
    the trail verifies."""
    env = {**os.environ, "PGPASSWORD": token(gw)}
    runs = [subprocess.Popen(
        ["pgbench", "-h", "127.0.0.1", "-p", str(gw.pg_port), "-U", "alice", "-c", "3", "-T", "60", "-S", "-M", mode, "app-scram"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for mode in ("simple", "extended")]
    time.sleep(1.5)
    assert gw.stop(signal.SIGTERM) == 0
    for run in runs:
        _, err = run.communicate(timeout=30)
        assert "terminating connection because the gateway is shutting down" in err, err[-2000:]
    assert "were cut" not in gw.log_text()
    verified = gw.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout


def test_sessions_list_and_replay_show_what_happened(gw):
    assert psql(gw, "SELECT id, full_name FROM customers ORDER BY id LIMIT 2").returncode == 0
    listing = gw.cli("sessions", "list", check=True).stdout.strip().splitlines()
    assert len(listing) == 1 and "alice via agent claude-code" in listing[0] and "app-scram" in listing[0]
    session_id = listing[0].split()[0]
    replay = gw.cli("sessions", "replay", session_id, check=True).stdout
    assert "who:    alice via agent claude-code" in replay
    assert "SELECT id, full_name FROM customers ORDER BY id LIMIT 2" in replay
    assert "→ SELECT 2, 2 row(s)" in replay
    assert "id | full_name" in replay


def test_statements_are_refused_when_the_audit_trail_cannot_be_written(gw):
    import sqlite3

    psycopg = pytest.importorskip("psycopg")
    conninfo = f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice password={token(gw)}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # Another process holds the write lock of the trail's tables: statements are still
        # recorded in the journal until events have waited past the busy timeout to be indexed;
        # from then on they are refused, and the refused one never runs.
        locker = sqlite3.connect(str(gw.workdir / "state" / "audit.sqlite"), timeout=1, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        refused = None
        try:
            deadline = time.monotonic() + 20
            number = 2
            while refused is None and time.monotonic() < deadline:
                try:
                    assert conn.execute(f"SELECT {number}").fetchone() == (number,)
                    number += 1
                    time.sleep(0.2)
                except psycopg.OperationalError as error:
                    refused = error
        finally:
            locker.execute("ROLLBACK")
            locker.close()
    assert refused is not None and "audit trail cannot be written" in str(refused)
    texts = [e["record"]["operation"]["text"] for e in gw.events()]
    assert f"SELECT {number}" not in texts
    # What ran while the tables were locked is in the trail.
    assert all(f"SELECT {n}" in texts for n in range(1, number))


def test_sigkill_during_pgbench_leaves_a_whole_trail_with_every_completed_statement(gw, workdir):
    import signal

    env = {**os.environ, "PGPASSWORD": token(gw)}
    log_prefix = workdir / "pgbench_log"
    bench = subprocess.Popen(
        ["pgbench", "-h", "127.0.0.1", "-p", str(gw.pg_port), "-U", "alice", "-c", "2", "-T", "30",
         "-M", "extended", "-l", f"--log-prefix={log_prefix}", "app-scram"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=workdir,
    )
    time.sleep(3)
    gw.stop(signal.SIGKILL)
    bench.communicate(timeout=60)

    # Every transaction pgbench logged as done was acknowledged to the client.
    completed = sum(len(path.read_text().splitlines()) for path in workdir.glob("pgbench_log*"))
    assert completed > 0
    executes = [e for e in gw.events() if e["record"]["operation"]["kind"] == "sql.execute"]
    assert len(executes) >= completed * 7
    verified = gw.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout


def test_postgresnio_sees_the_same_results_as_directly(gw, pg):
    probe = BINARY.parent / "PostgresNIOProbe"
    assert probe.exists(), "built by `swift build` with the rest of the package"

    def run(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(probe)], capture_output=True, text=True, timeout=60, env={**os.environ, **env})

    direct = run(PGHOST="127.0.0.1", PGPORT=str(pg.port), PGUSER="gh_scram", PGPASSWORD=pg.passwords["gh_scram"], PGDATABASE="app")
    through = run(PGHOST="127.0.0.1", PGPORT=str(gw.pg_port), PGUSER="alice", PGPASSWORD=token(gw), PGDATABASE="app-scram")
    assert direct.returncode == 0, direct.stderr
    assert through.returncode == 0, through.stderr
    assert through.stdout == direct.stdout
    assert "probe rows: 6 sum 62" in through.stdout and "division: 22012" in through.stdout
    texts = [e["record"]["operation"]["text"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.execute"]
    assert any("WHERE id = $1" in t and "$1='7'" in t for t in texts), texts


def test_a_newer_protocol_request_is_negotiated_down_and_fast_path_calls_are_recorded(gw):
    import socket
    import struct

    from test_postgres_clients import error_fields, read_message

    sock = socket.create_connection(("127.0.0.1", gw.pg_port), timeout=15)
    params = b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in (
        ("user", "alice"), ("database", "app-scram"), ("_pq_.future_option", "on"))) + b"\x00"
    sock.sendall(struct.pack("!II", 8 + len(params), (3 << 16) | 2) + params)  # protocol 3.2
    kind, body = read_message(sock)
    assert kind == b"v"
    newest, count = struct.unpack("!II", body[:8])
    assert (newest, count) == (0, 1) and body[8:].rstrip(b"\x00") == b"_pq_.future_option"
    kind, body = read_message(sock)
    assert (kind, struct.unpack("!I", body)[0]) == (b"R", 3)
    # A person: the policy cannot tell which function a fast-path call runs, and refuses that to agents.
    password = token(gw, actor=None).encode() + b"\x00"
    sock.sendall(b"p" + struct.pack("!I", 4 + len(password)) + password)
    while True:
        kind, body = read_message(sock)
        assert kind != b"E", error_fields(body)
        if kind == b"Z":
            break

    # FunctionCall: abs(int4) by OID 1397 with the text argument -5, text result.
    call = struct.pack("!IHH", 1397, 0, 1) + struct.pack("!i", 2) + b"-5" + struct.pack("!H", 0)
    sock.sendall(b"F" + struct.pack("!I", 4 + len(call)) + call)
    kind, _ = read_message(sock)
    assert kind == b"V"
    assert read_message(sock)[0] == b"Z"
    sock.close()
    calls = [e["record"]["operation"]["text"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.function-call"]
    assert calls == ["function call (oid 1397)\n-- parameters: $1='-5'"]


def test_startup_settings_are_recorded_and_identity_changing_ones_refused(gw):
    refused = subprocess.run(
        ["psql", f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice sslmode=disable", "-X", "-c", "SELECT 1"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PGPASSWORD": token(gw), "PGOPTIONS": "-c role=admin_user"},
    )
    assert refused.returncode != 0 and "startup parameter options is not allowed" in refused.stderr

    result = psql(gw, "SHOW client_encoding")
    assert result.returncode == 0 and result.stdout.strip() == "UTF8"
    [connect] = [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "pg.connect"]
    assert "client_encoding=UTF8" in connect["operation"]["text"]
    assert "standard_conforming_strings=on" in connect["operation"]["text"]
    assert connect["decision"]["reason"] == "group dev is allowed"


def test_before_login_a_large_message_is_refused_without_buffering_it(gw):
    import socket
    import struct

    from test_postgres_clients import error_fields, read_message

    sock = socket.create_connection(("127.0.0.1", gw.pg_port), timeout=15)
    params = b"user\x00alice\x00database\x00app-scram\x00\x00"
    sock.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    assert read_message(sock)[0] == b"R"
    # A "password" declaring 1 MiB: refused from its header, long before login could succeed.
    sock.sendall(b"p" + struct.pack("!I", 1 << 20))
    kind, body = read_message(sock)
    assert kind == b"E" and error_fields(body)["C"] == "08P01"
    sock.close()
    assert psql(gw, "SELECT 1").returncode == 0


def test_connections_beyond_the_limit_are_refused_before_login(pg, gateway_factory):
    psycopg = pytest.importorskip("psycopg")
    env = {f"GH_{m.upper()}_PASSWORD": pg.passwords[f"gh_{m}"] for m in ("scram", "md5", "plain")}
    gw = gateway_factory(pg_config(pg).replace("  max_recorded_rows: 5\n", "  max_recorded_rows: 5\n  max_connections: 2\n"), env=env)
    conninfo = f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice password={token(gw)}"
    first, second = psycopg.connect(conninfo), psycopg.connect(conninfo)
    try:
        refused = psql(gw, "SELECT 1")
        assert refused.returncode != 0 and "too many connections to the gateway" in refused.stderr
    finally:
        first.close()
    deadline = time.time() + 10
    while psql(gw, "SELECT 1").returncode != 0:
        assert time.time() < deadline, "a freed slot is not reused"
        time.sleep(0.2)
    second.close()
