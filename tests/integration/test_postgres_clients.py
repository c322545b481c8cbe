"""More real clients through the gateway, compared with the direct path to the same PostgreSQL:
PgJDBC, pgbench in every protocol mode, NOTICE/NOTIFY, errors in the middle of a result, failed
transactions, a large streamed result under bounded memory, and malformed frames from a raw socket."""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_postgres_gateway import pg_config, psql, token

PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")
JAVA_SOURCES = Path(__file__).parent / "java"


@pytest.fixture
def gw(pg, gateway_factory):
    env = {f"GH_{m.upper()}_PASSWORD": pg.passwords[f"gh_{m}"] for m in ("scram", "md5", "plain")}
    return gateway_factory(pg_config(pg), env=env)


def conninfo(gw, dbname: str = "app-scram") -> str:
    return f"host=127.0.0.1 port={gw.pg_port} dbname={dbname} user=alice password={token(gw)} sslmode=disable"


def records(gw, kind: str | None = None) -> list[dict]:
    recs = [e["record"] for e in gw.events()]
    return [r for r in recs if kind is None or r["operation"]["kind"] == kind]


def error_code(record: dict) -> str | None:
    return (record.get("outcome") or {}).get("errorCode")


def wait_for_records(gw, predicate, timeout: float = 10.0) -> list[dict]:
    """Result events are written after the fact (not waited for): poll until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while True:
        recs = records(gw)
        if predicate(recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


# ------------------------------------------------------------------------------------- PgJDBC


@pytest.fixture(scope="session")
def jdbc_client(tmp_path_factory) -> Path:
    """PgJdbcClient.java compiled once per test session."""
    assert PGJDBC_JAR.exists(), "apt-get install -y libpostgresql-jdbc-java"
    assert shutil.which("javac") and shutil.which("java"), "apt-get install -y openjdk-17-jdk-headless"
    out = tmp_path_factory.mktemp("jdbc")
    compiled = subprocess.run(
        ["javac", "-cp", str(PGJDBC_JAR), "-d", str(out), str(JAVA_SOURCES / "PgJdbcClient.java")],
        capture_output=True, text=True, timeout=180,
    )
    assert compiled.returncode == 0, compiled.stderr
    return out


def run_jdbc(classes: Path, url: str, user: str, password: str) -> list[str]:
    result = subprocess.run(
        ["java", "-cp", f"{PGJDBC_JAR}{os.pathsep}{classes}", "PgJdbcClient", url, user, password],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"PgJDBC failed against {url}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


def test_pgjdbc_through_the_gateway_sees_what_it_sees_directly(gw, pg, jdbc_client):
    through = run_jdbc(jdbc_client, f"jdbc:postgresql://127.0.0.1:{gw.pg_port}/app-scram?sslmode=disable", "alice", token(gw))
    direct = run_jdbc(jdbc_client, pg.jdbc_url(), "gh_scram", pg.passwords["gh_scram"])
    assert through == direct
    out = dict(line.split("=", 1) for line in through)
    # The direct run proves the program means something: named statements, a real cancel.
    assert out["server_prepared"] == "true", "PgJDBC did not switch to a named server-side statement"
    assert out["cancel_sqlstate"] == "57014" and out["cancel_fast"] == "true" and out["cancel_error"] == "null"
    assert out["after_cancel"] == "still usable"
    assert out["after_rollback_unchanged"] == "true" and out["inside_tx"] == "XXX"
    assert out["after_commit"] == "3|row 1,row 2,row 3"
    assert out["copy_in"] == "1000" and out["copy_out"] == "4"
    assert out["done"] == "true"

    executes = [r["operation"]["text"] for r in records(gw, "sql.execute")]
    by_id = [t for t in executes if t.startswith("SELECT id, email FROM customers WHERE id = $1")]
    # Every execution, including those on the named server-side statement (6th to 10th), is
    # recorded with the statement's SQL and the bound value.
    assert [t.split("\n-- parameters: ", 1)[1] for t in by_id] == [f"$1='{i}'" for i in range(1, 11)], by_id
    by_status = [t for t in executes if t.startswith("SELECT count(*) FROM orders WHERE status = $1")]
    assert [t.split("\n-- parameters: ", 1)[1] for t in by_status] == [
        f"$1='{s}'" for s in ("paid", "shipped", "pending", "paid", "refunded", "paid", "delivered")
    ], by_status
    assert any(t.startswith("UPDATE app_config SET value = $1") and "-- parameters: $1='XXX'" in t for t in executes), executes
    assert any(t.startswith("COPY jdbc_t FROM STDIN") for t in executes + [r["operation"]["text"] for r in records(gw, "sql.query")])
    results = wait_for_records(gw, lambda recs: any(error_code(r) == "57014" for r in recs))
    assert any(error_code(r) == "57014" for r in results if r["operation"]["kind"] == "sql.result")


# ------------------------------------------------------------------------------------- pgbench


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_in_every_protocol_mode(gw, pg, mode):
    clients, transactions = 2, 20
    result = pg.pgbench("-M", mode, "-c", str(clients), "-t", str(transactions), db="app-scram", user="alice",
                        host="127.0.0.1", port=gw.pg_port, password=token(gw), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr + gw.log_text()[-2000:]
    assert "number of failed transactions: 0" in result.stdout, result.stdout
    assert f"number of transactions actually processed: {clients * transactions}/{clients * transactions}" in result.stdout
    kind = "sql.query" if mode == "simple" else "sql.execute"
    statements = records(gw, kind)
    # The default TPC-B-like script: BEGIN, 3 UPDATEs, SELECT, INSERT, END.
    assert len(statements) >= clients * transactions * 7, (mode, len(statements))
    texts = [r["operation"]["text"] for r in statements]
    assert sum(t.startswith("UPDATE pgbench_accounts SET abalance = abalance +") for t in texts) == clients * transactions
    if mode != "simple":
        assert all("-- parameters: $1=" in t for t in texts if t.startswith("UPDATE pgbench_accounts")), texts[:10]


# ------------------------------------------------------------------------------ NOTICE / NOTIFY


def test_notices_reach_the_client(gw, pg):
    psycopg = pytest.importorskip("psycopg")
    do_block = "DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; RAISE WARNING 'careful'; END $$"
    seen: dict[str, list] = {}
    for path, info in (("through", conninfo(gw)), ("direct", pg.dsn())):
        notices: list = []
        with psycopg.connect(info, autocommit=True) as conn:
            conn.add_notice_handler(lambda d, notices=notices: notices.append((d.severity, d.sqlstate, d.message_primary)))
            conn.execute(do_block)
            assert conn.execute("SELECT 1").fetchone() == (1,)
        seen[path] = notices
    assert seen["through"] == seen["direct"] == [("NOTICE", "00000", "hello from plpgsql"), ("WARNING", "01000", "careful")]


def test_listen_notify_between_two_gateway_sessions(gw):
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(conninfo(gw), autocommit=True) as listener, psycopg.connect(conninfo(gw), autocommit=True) as notifier:
        listener.execute("LISTEN gatehouse_events")
        notifier.execute("NOTIFY gatehouse_events, 'first'")
        notifier.execute("SELECT pg_notify('gatehouse_events', 'second')")
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=10, stop_after=2)]
        assert got == [("gatehouse_events", "first"), ("gatehouse_events", "second")]
        # A notification that arrives while the listener is idle (not in a query) is delivered too.
        received: list = []
        waiter = threading.Thread(target=lambda: received.extend(listener.notifies(timeout=10, stop_after=1)))
        waiter.start()
        time.sleep(0.5)
        notifier.execute("NOTIFY gatehouse_events, 'while idle'")
        waiter.join(15)
        assert [n.payload for n in received] == ["while idle"]
        assert listener.execute("SELECT 'listener still usable'").fetchone() == ("listener still usable",)


# -------------------------------------------------------------------- errors in mid-result


MID_ERROR = "SELECT 1/(x-3) FROM generate_series(1,5) x"


def stream_until_error(pgconn, extended: bool):
    """Sends MID_ERROR in single-row mode and returns (rows received, SQLSTATE of the error)."""
    from psycopg import pq

    if extended:
        pgconn.send_query_params(MID_ERROR.encode(), None)
    else:
        pgconn.send_query(MID_ERROR.encode())
    pgconn.set_single_row_mode()
    rows, sqlstate = [], None
    while (result := pgconn.get_result()) is not None:
        if result.status == pq.ExecStatus.SINGLE_TUPLE:
            rows.append(result.get_value(0, 0).decode())
        elif result.status == pq.ExecStatus.FATAL_ERROR:
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE).decode()
        else:
            assert result.status == pq.ExecStatus.TUPLES_OK, result.status
    return rows, sqlstate


@pytest.mark.parametrize("extended", [False, True], ids=["simple", "extended"])
def test_an_error_in_the_middle_of_a_result(gw, pg, extended):
    psycopg = pytest.importorskip("psycopg")
    outcomes = {}
    for path, info in (("through", conninfo(gw)), ("direct", pg.dsn())):
        with psycopg.connect(info, autocommit=True) as conn:
            outcomes[path] = stream_until_error(conn.pgconn, extended)
            # The session stays usable, at the wire level and through the usual API.
            assert conn.execute("SELECT 'next'").fetchone() == ("next",)
            with pytest.raises(psycopg.errors.DivisionByZero):
                if extended:
                    conn.execute(MID_ERROR.replace("3", "%s"), (3,)).fetchall()
                else:
                    conn.execute(MID_ERROR).fetchall()
            assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
    assert outcomes["through"] == outcomes["direct"] == (["0", "-1"], "22012")

    kind = "sql.execute" if extended else "sql.query"
    request_seqs = {e["seq"] for e in gw.events() if e["record"]["operation"]["kind"] == kind
                    and e["record"]["operation"]["text"].startswith("SELECT 1/(x-")}
    assert len(request_seqs) == 2

    def errors(recs):
        return [r for r in recs if r["operation"]["kind"] == "sql.result" and error_code(r) == "22012"
                and int(r["operation"]["text"].rsplit(" ", 1)[1]) in request_seqs]

    recs = wait_for_records(gw, lambda recs: len(errors(recs)) == 2)
    found = errors(recs)
    assert len(found) == 2, [r.get("outcome") for r in recs if r["operation"]["kind"] == "sql.result"]
    # The rows that did reach the client before the error are counted.
    assert all(r["outcome"]["rows"] == 2 for r in found), [r["outcome"] for r in found]


# ----------------------------------------------------------------------- failed transactions


def test_a_failed_transaction_with_psycopg(gw, pg):
    psycopg = pytest.importorskip("psycopg")
    for info in (conninfo(gw), pg.dsn()):
        with psycopg.connect(info) as conn:  # not autocommit: the first statement opens a transaction
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (50,)
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            with pytest.raises(psycopg.errors.InFailedSqlTransaction) as failed:
                conn.execute("SELECT 1")
            assert failed.value.sqlstate == "25P02"
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT %s::int", (2,))  # extended protocol too
            conn.rollback()
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute("SELECT 'after rollback'").fetchone() == ("after rollback",)
            conn.commit()
    results = wait_for_records(gw, lambda recs: sum(error_code(r) == "25P02" for r in recs) >= 2)
    codes = [error_code(r) for r in results if r["operation"]["kind"] == "sql.result"]
    assert codes.count("22012") == 1 and codes.count("25P02") == 2, codes


def test_a_failed_transaction_with_psql(gw, pg, workdir):
    script = workdir / "failed-tx.sql"
    script.write_text(
        "BEGIN;\n"
        "SELECT count(*) FROM customers;\n"
        "SELECT 1/0;\n"
        "SELECT 'never';\n"
        "ROLLBACK;\n"
        "SELECT 'after rollback';\n"
    )
    # psql() stops on the first error (ON_ERROR_STOP=1); the later -v turns that off for this script.
    through = psql(gw, "SELECT 'start'", extra=["-v", "ON_ERROR_STOP=0", "-f", str(script)])
    direct = subprocess.run(
        ["psql", pg.dsn(user="gh_scram"), "-X", "-At", "-c", "SELECT 'start'", "-v", "ON_ERROR_STOP=0", "-f", str(script)],
        capture_output=True, text=True, timeout=60, env=pg.env(),
    )
    assert through.returncode == direct.returncode == 0, through.stderr
    assert through.stdout == direct.stdout == "start\nBEGIN\n50\nROLLBACK\nafter rollback\n"
    assert through.stderr == direct.stderr
    assert "division by zero" in through.stderr
    assert "current transaction is aborted, commands ignored until end of transaction block" in through.stderr


# ------------------------------------------------------------------------ large results stream


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler:
    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.baseline = rss_kib(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 1024


ROWS, WIDTH = 200_000, 1000
BIG = f"SELECT repeat('x', {WIDTH}) FROM generate_series(1, {ROWS})"


def test_a_large_result_streams_with_bounded_memory(gw):
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(conninfo(gw), autocommit=True) as conn:
        conn.execute("SELECT 1")  # warm up the session before the baseline
        started = time.monotonic()
        with RssSampler(gw.process.pid) as sampler:
            count = size = 0
            # Single-row mode: the whole result comes in one go; the client reads it as it arrives.
            for (value,) in conn.cursor().stream(BIG):
                count += 1
                size += len(value)
        elapsed = time.monotonic() - started
        assert (count, size) == (ROWS, ROWS * WIDTH)
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)
    print(f"gateway RSS {sampler.baseline >> 10} MiB, grew {sampler.growth_mib:.1f} MiB, {elapsed:.1f} s")
    assert sampler.growth_mib < 100, f"gateway RSS grew {sampler.growth_mib:.0f} MiB for a {ROWS * WIDTH >> 20} MiB result"
    assert elapsed < 60, elapsed


def test_a_large_copy_out_to_a_slow_reader_streams_with_bounded_memory(gw):
    """The client reads slower than the database writes: the gateway must push back, not buffer."""
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(conninfo(gw), autocommit=True) as conn:
        conn.execute("SELECT 1")
        with RssSampler(gw.process.pid) as sampler:
            size = 0
            with conn.cursor().copy(f"COPY ({BIG}) TO STDOUT") as copy:
                # Stall at the start so the database fills every buffer on the way, then drain.
                time.sleep(3)
                for chunk in copy:
                    size += len(chunk)
        assert size == ROWS * (WIDTH + 1)
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)
    print(f"gateway RSS {sampler.baseline >> 10} MiB, grew {sampler.growth_mib:.1f} MiB")
    assert sampler.growth_mib < 100, f"gateway RSS grew {sampler.growth_mib:.0f} MiB for a {ROWS * (WIDTH + 1) >> 20} MiB COPY"


# ------------------------------------------------------------------ malformed frames, raw socket


def read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    header = exactly(5)
    kind, length = header[:1], struct.unpack("!I", header[1:])[0]
    return kind, exactly(length - 4)


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


def raw_login(gw, dbname: str = "app-scram") -> socket.socket:
    """StartupMessage, cleartext password (the token), then everything up to ReadyForQuery."""
    sock = socket.create_connection(("127.0.0.1", gw.pg_port), timeout=15)
    params = b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in (("user", "alice"), ("database", dbname))) + b"\x00"
    sock.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    kind, body = read_message(sock)
    assert (kind, struct.unpack("!I", body)[0]) == (b"R", 3), (kind, body)  # AuthenticationCleartextPassword
    password = token(gw).encode() + b"\x00"
    sock.sendall(b"p" + struct.pack("!I", 4 + len(password)) + password)
    seen = []
    while True:
        kind, body = read_message(sock)
        assert kind != b"E", error_fields(body)
        seen.append(kind)
        if kind == b"Z":
            break
    assert seen[0] == b"R" and b"K" in seen, seen
    return sock


def read_until_closed(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    messages = []
    while True:
        try:
            messages.append(read_message(sock))
        except EOFError:
            return messages
        except ConnectionResetError:
            return messages


@pytest.mark.parametrize("declared", [0x7FFFFFFF, 0x80000000, (64 << 20) + 5], ids=["2GiB-1", "2GiB", "64MiB+1"])
def test_an_oversized_frame_ends_only_that_session(gw, declared):
    other = psql(gw, "SELECT 'before'")
    assert other.returncode == 0 and other.stdout.strip() == "before", other.stderr
    sock = raw_login(gw)
    try:
        # A Query frame header only: the gateway must refuse on the declared length, without
        # waiting for (or allocating) the body.
        sock.sendall(b"Q" + struct.pack("!I", declared))
        messages = read_until_closed(sock)
    finally:
        sock.close()
    assert [k for k, _ in messages] == [b"E"], messages
    fields = error_fields(messages[0][1])
    assert fields["S"] == "FATAL" and fields["C"] == "08P01", fields
    assert gw.process.poll() is None, gw.log_text()[-2000:]
    after = psql(gw, "SELECT 'after'")
    assert after.returncode == 0 and after.stdout.strip() == "after", after.stderr + gw.log_text()[-2000:]


def test_malformed_frames_end_only_that_session(gw):
    cases = {
        "length below 4": b"Q" + struct.pack("!I", 3),
        "query without terminator": b"Q" + struct.pack("!I", 4 + 8) + b"SELECT 1",
        "bind for a bogus parameter count": b"B" + struct.pack("!I", 4 + 2 + 2 + 2) + b"\x00\x00" + struct.pack("!hh", 0, 5),
    }
    for name, frame in cases.items():
        sock = raw_login(gw)
        try:
            sock.sendall(frame)
            messages = read_until_closed(sock)
        finally:
            sock.close()
        assert [k for k, _ in messages] == [b"E"], (name, messages)
        fields = error_fields(messages[0][1])
        assert fields["S"] == "FATAL" and fields["C"] == "08P01", (name, fields)
    assert gw.process.poll() is None
    after = psql(gw, "SELECT 'after'")
    assert after.returncode == 0 and after.stdout.strip() == "after", after.stderr


def test_an_oversized_startup_packet_is_refused_before_login(gw):
    sock = socket.create_connection(("127.0.0.1", gw.pg_port), timeout=15)
    try:
        sock.sendall(struct.pack("!II", 0x7FFFFFFF, 196608))
        messages = read_until_closed(sock)
    finally:
        sock.close()
    assert [k for k, _ in messages] == [b"E"], messages
    fields = error_fields(messages[0][1])
    assert fields["S"] == "FATAL" and fields["C"] == "08P01", fields
    assert gw.process.poll() is None
    after = psql(gw, "SELECT 'after'")
    assert after.returncode == 0 and after.stdout.strip() == "after", after.stderr
