"""Controls on the PostgreSQL data path, end to end: guardrails refuse statements (the session goes
on), a row limit cuts a bulk read, and masked columns never leave the gateway unmasked, whatever
client, protocol or result format reads them."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import gatehouse
from test_postgres_gateway import psql, token

PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")
JAVA_SOURCES = Path(__file__).parent / "java"

POLICY = """
policy:
  rules:
    - name: no-ddl-for-agents
      effect: deny
      agents: ["*"]
      sql: { kinds: [drop, truncate, alter] }
    - name: no-unbounded-writes
      effect: deny
      sql: { flags: [update_or_delete_without_where] }
    - name: no-server-programs-or-files
      effect: deny
      sql: { flags: [copy_to_program, copy_from_program, server_file_access] }
    - name: bulk-export
      effect: limit
      agents: ["*"]
      max_rows: 20
    - name: pii
      effect: mask
      connections: [masked]
      columns: [customers.email, customers.card_number]
      detectors: [ssn]
      strategy: partial
"""


def config(pg) -> str:
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
        for name in ("app", "masked")
    )
    return f"""
postgres:
  listen: 127.0.0.1:PG_LISTEN_PORT
  max_recorded_rows: 50
connections:{connections}
{POLICY}
"""


@pytest.fixture
def gw(pg, gateway_factory):
    return gateway_factory(config(pg), env={"GH_SCRAM_PASSWORD": pg.passwords["gh_scram"]})


@pytest.fixture(scope="module")
def originals(pg):
    """The first customers as the database holds them."""
    rows = pg.psql("SELECT id, email, card_number, national_id, full_name FROM customers ORDER BY id LIMIT 5", user="gh_scram")
    return [line.split("|") for line in rows.strip().splitlines()]


def run_psql(gw, script: str, dbname="app", actor: str | None = "claude-code"):
    env = {**os.environ, "PGPASSWORD": token(gw, actor=actor), "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        ["psql", f"host=127.0.0.1 port={gw.pg_port} dbname={dbname} user=alice sslmode=disable", "-X", "-At", "-f", "-"],
        input=script, capture_output=True, text=True, env=env, timeout=60,
    )


def wait_for(condition, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value or time.time() > deadline:
            return value
        time.sleep(0.1)


def test_a_blocked_drop_names_its_rule_and_the_session_goes_on(gw, pg):
    result = run_psql(gw, "DROP TABLE customers;\nSELECT count(*) FROM customers;\nDELETE FROM orders;\nDELETE FROM orders WHERE false;\n")
    assert "ERROR:  gatehouse: rule no-ddl-for-agents denies a drop statement on app" in result.stderr
    assert "DETAIL:  Refused by policy rule no-ddl-for-agents." in result.stderr
    assert "rule no-unbounded-writes denies a delete statement" in result.stderr
    assert result.stdout.splitlines() == ["50", "DELETE 0"], "the session stays usable after each refusal"
    assert pg.psql("SELECT count(*) FROM customers", user="gh_scram").strip() == "50"
    assert int(pg.psql("SELECT count(*) FROM orders", user="gh_scram").strip()) > 0

    events = gw.events()
    drop = next(e["record"] for e in events if (e["record"]["operation"].get("text") or "").startswith("DROP TABLE customers"))
    assert drop["decision"]["effect"] == "deny" and drop["decision"]["rule"] == "no-ddl-for-agents"
    results = wait_for(lambda: [e["record"] for e in gw.events() if e["record"]["operation"]["kind"] == "sql.result"
                                and e["record"].get("outcome", {}).get("errorCode") == "42501"])
    assert len(results) == 2, "both refusals are recorded with their SQLSTATE"
    # A person may do what agents may not.
    person = run_psql(gw, "BEGIN;\nALTER TABLE app_config ADD COLUMN note text;\nROLLBACK;\n", actor=None)
    assert person.returncode == 0, person.stderr


def test_a_refusal_inside_a_transaction_fails_it_like_the_database_would(gw):
    result = run_psql(gw, "BEGIN;\nINSERT INTO app_config VALUES ('k', 'v', now());\nTRUNCATE orders;\nSELECT 1;\nROLLBACK;\n")
    assert "no-ddl-for-agents" in result.stderr
    assert "current transaction is aborted" in result.stderr


def test_prepared_statements_cannot_run_what_text_may_not(gw, pg):
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(f"host=127.0.0.1 port={gw.pg_port} dbname=app user=alice password={token(gw)} sslmode=disable",
                         autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-ddl-for-agents"):
            conn.execute("DROP TABLE customers", prepare=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-unbounded-writes"):
            conn.execute("UPDATE orders SET amount = %s", (0,), prepare=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-unbounded-writes"):
            conn.execute("PREPARE wipe AS DELETE FROM orders")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-server-programs-or-files"):
            conn.execute("SELECT pg_read_file(%s)", ("/etc/passwd",))
        conn.execute("PREPARE one AS SELECT count(*) FROM customers WHERE id = $1")
        assert conn.execute("EXECUTE one(1)").fetchone() == (1,)
        for _ in range(6):  # past psycopg's prepare threshold: a named server-side statement
            assert conn.execute("SELECT count(*) FROM customers WHERE id > %s", (0,)).fetchone() == (50,)
    assert pg.psql("SELECT count(*) FROM customers", user="gh_scram").strip() == "50"


def test_a_bulk_select_is_cut_at_the_row_limit(gw):
    result = run_psql(gw, "SELECT id FROM orders ORDER BY id;\nSELECT count(*) FROM orders;\n")
    assert "gatehouse: the result was stopped at 20 rows (rule bulk-export" in result.stderr
    assert result.stdout.splitlines() == ["200"], "psql shows no partial result, and the session goes on"
    people = run_psql(gw, "SELECT id FROM orders;\n", actor=None)
    assert len(people.stdout.splitlines()) == 200, "the limit is for agents"

    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(f"host=127.0.0.1 port={gw.pg_port} dbname=app user=alice password={token(gw)} sslmode=disable",
                         autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="bulk-export"):
            conn.execute("SELECT * FROM orders WHERE id > %s", (0,)).fetchall()
        assert len(conn.execute("SELECT * FROM orders WHERE id <= %s", (20,)).fetchall()) == 20
        with conn.cursor(name="server_side") as cursor:  # a portal fetched in batches counts as one
            with pytest.raises(psycopg.errors.ProgramLimitExceeded):
                with conn.transaction():
                    cursor.itersize = 7
                    cursor.execute("SELECT id FROM orders")
                    list(cursor)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def masked_rows(gw, sql: str, actor="claude-code"):
    result = run_psql(gw, sql + "\n", dbname="masked", actor=actor)
    assert result.returncode == 0, result.stderr
    return [line.split("|") for line in result.stdout.strip().splitlines()]


def test_masked_columns_with_psql(gw, originals):
    rows = masked_rows(gw, "SELECT id, email, card_number, national_id, full_name FROM customers ORDER BY id LIMIT 5")
    assert len(rows) == 5
    for seen, real in zip(rows, originals):
        assert seen[0] == real[0] and seen[4] == real[4], "unmasked columns pass as they are"
        for column in (1, 2, 3):
            assert seen[column] != real[column]
            assert seen[column].endswith(real[column][-4:]) and seen[column].count("*") >= len(real[column]) - 7, seen[column]
    # People are masked too: the rule names no one.
    assert masked_rows(gw, "SELECT email FROM customers WHERE id = 1", actor=None)[0][0] != originals[0][1]


def test_derived_columns_cannot_launder_masked_data(gw, originals):
    email, card = originals[0][1], originals[0][2]
    queries = [
        "SELECT lower(email), email || '', substr(card_number, 1, 8), encode(convert_to(email, 'UTF8'), 'base64') FROM customers WHERE id = 1",
        "SELECT email::varchar(200), concat('x', card_number), (SELECT email FROM customers WHERE id = 1) FROM customers WHERE id = 1",
        "WITH c AS (SELECT email AS e, card_number AS n FROM customers) SELECT e, n FROM c LIMIT 1",
        "SELECT email FROM customers WHERE id = 1 UNION ALL SELECT 'x'",
        "SELECT row_to_json(c), json_build_object('e', c.email), to_jsonb(c) FROM customers c WHERE id = 1",
        "SELECT c FROM customers c WHERE id = 1",
        "SELECT string_agg(email, ',') FROM customers",
    ]
    for sql in queries:
        text = "\n".join("|".join(r) for r in masked_rows(gw, sql))
        assert email not in text and card not in text, sql
        assert email.split("@")[0] not in text, sql
    # A computed column that touches no masked column is left alone.
    assert masked_rows(gw, "SELECT count(*), max(id) FROM customers") == [["50", "50"]]


def test_masked_values_cannot_be_copied_or_sampled_around_the_mask(gw):
    for sql in ("CREATE TEMP TABLE t AS SELECT email AS x FROM customers",
                "INSERT INTO app_config SELECT email, card_number, now() FROM customers",
                "SELECT most_common_vals FROM pg_stats WHERE attname = 'email'",
                "COPY (SELECT email FROM customers) TO STDOUT"):
        result = run_psql(gw, sql + ";\n", dbname="masked", actor=None)
        assert "ERROR:  gatehouse:" in result.stderr and "(pii)" in result.stderr, (sql, result.stderr)
    assert run_psql(gw, "UPDATE app_config SET value = value WHERE key = 'none';\n", dbname="masked").returncode == 0


def test_an_error_does_not_echo_a_masked_value(gw, originals):
    result = run_psql(gw, "SELECT email::int FROM customers WHERE id = 1;\n", dbname="masked")
    assert "invalid input syntax for type integer" in result.stderr
    assert originals[0][1] not in result.stderr


def test_binary_results_and_prepared_statements_are_masked(gw, originals):
    psycopg = pytest.importorskip("psycopg")
    email, card = originals[0][1], originals[0][2]
    with psycopg.connect(f"host=127.0.0.1 port={gw.pg_port} dbname=masked user=alice password={token(gw)} sslmode=disable",
                         autocommit=True) as conn:
        for binary in (False, True):
            for _ in range(6):
                row = conn.cursor(binary=binary).execute(
                    "SELECT email, card_number, id, row_to_json(c)::jsonb FROM customers c WHERE id = %s", (1,)).fetchone()
                assert row[0] != email and row[0].endswith(email[-4:]), (binary, row)
                assert row[1] != card and row[1].endswith(card[-4:])
                assert row[2] == 1
                assert isinstance(row[3], str) and email not in row[3], "a masked jsonb value stays valid JSON"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="COPY"):
            with conn.cursor().copy("COPY customers TO STDOUT"):
                pass


def test_pgjdbc_sees_masked_values(gw, originals, tmp_path):
    assert PGJDBC_JAR.exists() and shutil.which("javac"), "scripts/install-deps.sh installs PgJDBC and a JDK"
    compiled = subprocess.run(["javac", "-cp", str(PGJDBC_JAR), "-d", str(tmp_path), str(JAVA_SOURCES / "PgJdbcMasked.java")],
                              capture_output=True, text=True, timeout=180)
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run(
        ["java", "-cp", f"{PGJDBC_JAR}:{tmp_path}", "PgJdbcMasked",
         f"jdbc:postgresql://127.0.0.1:{gw.pg_port}/masked?sslmode=disable&prepareThreshold=3&binaryTransfer=true",
         "alice", token(gw)],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split("=", 1) for line in run.stdout.splitlines())
    assert lines["drop"] == "42501" and lines["after"] == "50"
    plain = [lines["plain"].split("|")]
    assert plain[0][1].startswith("*") and originals[0][1] not in lines["plain"]
    prepared = [lines[f"prepared{i}"].split("|") for i in range(1, 9)]
    for i, row in enumerate(prepared):
        real = originals[i] if i < len(originals) else None
        assert row[1].startswith("*") and row[2].startswith("*") and row[3].startswith("*"), row
        if real:
            assert row[1] != real[1] and row[2] != real[2]
    assert originals[0][1] not in run.stdout


def test_the_trail_holds_only_masked_values(gw, originals):
    masked_rows(gw, "SELECT id, email, card_number, national_id FROM customers ORDER BY id LIMIT 5")
    wait_for(lambda: any(e["record"]["operation"]["kind"] == "sql.result" for e in gw.events()))
    time.sleep(0.3)
    payloads = "\n".join(e["record"].get("payload") or "" for e in gw.events())
    assert "***" in payloads
    db = next(Path(gw.workdir, "state").glob("audit*.sqlite*"), None) or next(Path(gw.workdir, "state").rglob("*.sqlite"))
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())
    for real in originals:
        for value in real[1:4]:
            assert value.encode() not in raw


def test_policy_explain_and_check(gw, tmp_path):
    explained = gw.cli("policy", "explain", "--as", "alice", "--group", "dev", "--agent", "claude-code",
                       "--connection", "app", "--sql", "SELECT 1; DROP TABLE customers", "--expect", "deny")
    assert explained.returncode == 0, explained.stderr
    assert "decision: deny (rule no-ddl-for-agents)" in explained.stdout
    assert "statement 2: DROP TABLE customers" in explained.stdout
    assert "applies  deny   no-ddl-for-agents" in explained.stdout
    assert "row limit: 20 rows per statement (rule bulk-export)" in explained.stdout
    person = gw.cli("policy", "explain", "--as", "alice", "--connection", "app", "--sql", "DROP TABLE x", "--expect", "deny")
    assert person.returncode == 1 and "expected deny, the policy decides allow" in person.stderr

    broken = gw.config.read_text().replace("connections: [masked]", "connections: [maskd]")
    bad = tmp_path / "bad.yaml"
    bad.write_text(broken)
    checked = gatehouse("check", "--config", str(bad))
    assert checked.returncode == 1
    assert "(pii) can never match: no connection is named maskd" in checked.stderr


def test_unmasked_values_kept_for_auditors_are_sealed(pg, gateway_factory, originals):
    """A mask rule with keep_unmasked_for_audit: the client and the trail's payload see masked
    values; the sealed copy opens only with the gateway's mask key, and opening it is recorded."""
    sealed_config = config(pg).replace("      strategy: partial\n", "      strategy: partial\n      keep_unmasked_for_audit: true\n")
    gw = gateway_factory(sealed_config, env={"GH_SCRAM_PASSWORD": pg.passwords["gh_scram"]})
    rows = masked_rows(gw, "SELECT id, email FROM customers ORDER BY id LIMIT 2")
    assert rows[0][1] != originals[0][1]
    result = wait_for(lambda: next((e for e in gw.events() if e["record"]["operation"]["kind"] == "sql.result"
                                    and e["record"].get("sealedPayload")), None))
    assert result, "the result event carries the sealed rows"
    record = result["record"]
    assert originals[0][1] not in (record.get("payload") or "") and originals[0][1] not in record["sealedPayload"]
    opened = gw.cli("audit", "unseal", str(result["seq"]))
    assert opened.returncode == 0, opened.stderr
    assert originals[0][1] in opened.stdout and originals[1][1] in opened.stdout
    assert any(e["record"]["operation"]["kind"] == "audit.unseal" for e in gw.events()), "reading it is recorded"
    # A key other than the gateway's opens nothing.
    (Path(gw.workdir) / "state" / "mask.key").write_text("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n")
    refused = gw.cli("audit", "unseal", str(result["seq"]))
    assert refused.returncode == 1 and "cannot be opened" in refused.stderr
