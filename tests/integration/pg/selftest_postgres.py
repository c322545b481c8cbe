"""Self-test of the PostgreSQL test harness (postgres.py): it proves the fixture, not Gatehouse.

    python3 -m pytest -p no:cacheprovider -q tests/integration/pg/selftest_postgres.py

Needs Debian postgresql-15, libpostgresql-jdbc-java, openjdk-17-jdk-headless (javac) and PyPI
psycopg[binary], asyncpg, pytest.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from postgres import ADMIN_USER, AUTH_METHODS, GATEWAY_ROLES, PostgresError, PostgresServer, free_port  # noqa: E402

PGJDBC_JAR = Path("/usr/share/java/postgresql.jar")
ALL_ROLES = (ADMIN_USER, *GATEWAY_ROLES)


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        yield server


# ---------------------------------------------------------------------------------- auth


def auth_request_code(host: str, port: int, user: str, db: str = "app") -> int:
    """Sends a v3 StartupMessage and returns the AuthenticationRequest code the server answers
    with: 10 = SASL (SCRAM), 5 = MD5, 3 = cleartext password, 0 = ok (no password)."""
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    msg = struct.pack("!ii", 8 + len(params), 196608) + params
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(msg)
        head = b""
        while len(head) < 9:
            chunk = s.recv(9 - len(head))
            assert chunk, "server closed the connection"
            head += chunk
    kind, _length, code = struct.unpack("!cii", head)
    assert kind == b"R", f"expected an AuthenticationRequest, got {kind!r}"
    return code


EXPECTED_CODE = {"scram-sha-256": 10, "md5": 5, "password": 3}


@pytest.mark.parametrize("role", ALL_ROLES)
def test_pg_hba_selects_method_per_role(pg, role):
    assert auth_request_code(pg.host, pg.port, role) == EXPECTED_CODE[AUTH_METHODS[role]]


def test_unknown_user_is_asked_for_scram_too(pg):
    assert auth_request_code(pg.host, pg.port, "nobody_here") == 10


@pytest.mark.parametrize("role", ALL_ROLES)
def test_role_logs_in_with_password_and_wrong_password_fails(pg, role):
    r = pg.psql_run("SELECT current_user", user=role)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == role

    bad = pg.psql_run("SELECT 1", user=role, password=pg.passwords[role] + "x")
    assert bad.returncode != 0
    assert f'password authentication failed for user "{role}"' in bad.stderr

    empty = pg.psql_run("SELECT 1", user=role, password="")
    assert empty.returncode != 0


def test_stored_password_hashes(pg):
    rows = dict(
        line.split("|", 1)
        for line in pg.psql("SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin ORDER BY 1").split()
    )
    assert rows["gh_md5"].startswith("md5") and len(rows["gh_md5"]) == 35
    for role in ("admin_user", "gh_scram", "gh_plain"):
        assert rows[role].startswith("SCRAM-SHA-256$")
    assert pg.psql("SHOW password_encryption").strip() == "scram-sha-256"


# ---------------------------------------------------------------------------------- data


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def test_demo_schema_has_data(pg):
    counts = pg.psql(
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT count(*) FROM app_config)"
    ).strip()
    assert counts == "50|200|7"
    first = pg.psql("SELECT full_name, email, phone, card_number FROM customers WHERE id = 1").strip()
    assert first == "Alice Hoffman|alice.hoffman1@example.com|+1-555-0100|4111111111111111"
    rows = [r.split("|") for r in pg.psql("SELECT email, phone, card_number, national_id FROM customers").split()]
    for email, phone, card, ssn in rows:
        assert email.endswith("@example.com")
        assert re.fullmatch(r"\+1-555-01\d\d", phone)
        assert luhn_ok(card), card
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", ssn)
        area, group, serial = ssn.split("-")
        assert area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"
    orphans = pg.psql("SELECT count(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL")
    assert orphans.strip() == "0"


def test_demo_schema_is_deterministic_and_idempotent(pg):
    digest = "SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM customers c; " \
             "SELECT md5(string_agg(o::text, ',' ORDER BY o.id)) FROM orders o"
    before = pg.psql(digest)
    schema = (Path(__file__).resolve().parents[3] / "examples" / "demo-schema.sql").read_text()
    pg.psql(schema, user="gh_scram")  # second load: drops and recreates
    pg.psql("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO gh_md5, gh_plain;"
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO gh_md5, gh_plain", user="gh_scram")
    assert pg.psql(digest) == before


@pytest.mark.parametrize("role", GATEWAY_ROLES)
def test_each_gateway_role_reads_and_writes(pg, role):
    out = pg.psql(
        """
        BEGIN;
        INSERT INTO customers (full_name, email, phone, card_number, national_id, created_at)
            VALUES ('Test Person', 'test.person@example.com', '+1-555-0199', '4111111111111111', '123-45-6789', now())
            RETURNING full_name;
        INSERT INTO orders (customer_id, amount, status, created_at)
            SELECT id, 9.99, 'pending', now() FROM customers WHERE email = 'test.person@example.com';
        UPDATE app_config SET value = 'x' WHERE key = 'currency';
        SELECT count(*) FROM orders;
        ROLLBACK;
        """,
        user=role,
    ).split()
    assert out == ["Test", "Person", "201"]


# ---------------------------------------------------------------------------------- drivers


@pytest.mark.parametrize("role", ALL_ROLES)
def test_psycopg_connects(pg, role):
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(pg.dsn(user=role), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == role
        assert conn.execute("SELECT email FROM customers WHERE id = %s", (2,)).fetchone()[0] == "bob.baker2@example.com"
        with conn.cursor() as cur:
            cur.execute("SELECT sum(amount) FROM orders WHERE status = %s", ("paid",), prepare=True)
            assert str(cur.fetchone()[0]) == "6276.50"


@pytest.mark.parametrize("role", ALL_ROLES)
def test_asyncpg_connects(pg, role):
    asyncpg = pytest.importorskip("asyncpg")

    async def go():
        conn = await asyncpg.connect(host=pg.host, port=pg.port, user=role, password=pg.passwords[role],
                                     database="app", ssl=False, timeout=10)
        try:
            assert await conn.fetchval("SELECT current_user") == role
            stmt = await conn.prepare("SELECT full_name FROM customers WHERE id = $1")
            assert await stmt.fetchval(3) == "Carmen Ito"
            assert await conn.fetchval("SELECT count(*) FROM orders") == 200
        finally:
            await conn.close()

        url_conn = await asyncpg.connect(pg.url(user=role), ssl=False, timeout=10)
        await url_conn.close()

    asyncio.run(go())


PROBE_JAVA = r"""
import java.sql.*;

public class Probe {
    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], password = args[2];
        try (Connection c = DriverManager.getConnection(url, user, password)) {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT current_user, count(*) FROM customers")) {
                r.next();
                System.out.println("user=" + r.getString(1));
                System.out.println("customers=" + r.getLong(2));
            }
            // PgJDBC switches to a named server-side statement after prepareThreshold (5) executions.
            try (PreparedStatement ps = c.prepareStatement("SELECT email FROM customers WHERE id = ?")) {
                for (int i = 1; i <= 6; i++) {
                    ps.setInt(1, i);
                    try (ResultSet r = ps.executeQuery()) { r.next(); System.out.println("email" + i + "=" + r.getString(1)); }
                }
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*) FROM pg_prepared_statements")) {
                r.next();
                System.out.println("server_prepared=" + r.getLong(1));
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("UPDATE app_config SET value = ? WHERE key = 'currency'")) {
                ps.setString(1, "EUR");
                System.out.println("updated=" + ps.executeUpdate());
            }
            c.rollback();
            System.out.println("ok");
        }
    }
}
"""


@pytest.fixture(scope="module")
def jdbc_probe(tmp_path_factory):
    assert PGJDBC_JAR.exists(), "apt-get install -y libpostgresql-jdbc-java"
    assert shutil.which("javac") and shutil.which("java"), "apt-get install -y openjdk-17-jdk-headless"
    d = tmp_path_factory.mktemp("jdbc")
    (d / "Probe.java").write_text(PROBE_JAVA)
    subprocess.run(["javac", "-cp", str(PGJDBC_JAR), "-d", str(d), str(d / "Probe.java")],
                   check=True, capture_output=True, timeout=120)
    return d


@pytest.mark.parametrize("role", ALL_ROLES)
def test_pgjdbc_connects(pg, jdbc_probe, role):
    r = subprocess.run(
        ["java", "-cp", f"{PGJDBC_JAR}{os.pathsep}{jdbc_probe}", "Probe", pg.jdbc_url(), role, pg.passwords[role]],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = dict(line.split("=", 1) for line in r.stdout.split() if "=" in line)
    assert out["user"] == role
    assert out["customers"] == "50"
    assert out["email6"] == "farid.dubois6@example.com"
    assert int(out["server_prepared"]) >= 1, "PgJDBC did not switch to a named server-side statement"
    assert out["updated"] == "1"
    assert r.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------------------- pgbench


def test_pgbench_init_and_run(pg):
    pg.pgbench_init("bench")
    assert pg.psql("SELECT count(*) FROM pgbench_accounts", db="bench").strip() == "100000"
    r = pg.pgbench("-T", "2", "-c", "2", "-j", "2", db="bench", user="gh_scram")
    assert r.returncode == 0, r.stderr
    assert re.search(r"number of failed transactions: 0\b", r.stdout), r.stdout
    tps = float(re.search(r"tps = ([0-9.]+)", r.stdout).group(1))
    assert tps > 0
    # the other roles can use the pgbench tables too (prepared mode, select-only)
    for role in ("gh_md5", "gh_plain"):
        r = pg.pgbench("-S", "-M", "prepared", "-t", "50", db="bench", user=role)
        assert r.returncode == 0, r.stderr
        assert "number of transactions actually processed: 50/50" in r.stdout


# ---------------------------------------------------------------------------------- isolation


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port`` from /proc/net/tcp{,6}."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            if len(addr_hex) == 8:
                found.add(socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(addr_hex, 16))))
            else:
                raw = b"".join(struct.pack("<I", int(addr_hex[i:i + 8], 16)) for i in range(0, 32, 8))
                found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def test_listens_only_on_loopback(pg):
    assert listening_addresses(pg.port) == {"127.0.0.1"}
    assert pg.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    sock_dir = pg.psql("SHOW unix_socket_directories").strip()
    assert Path(sock_dir) == pg.socket_dir and str(pg.dir) in sock_dir
    assert (pg.socket_dir.stat().st_mode & 0o077) == 0
    assert pg.psql("SHOW fsync").strip() == "off"


# ---------------------------------------------------------------------------------- lifecycle


def test_workdir_under_closed_parent_and_cleanup(tmp_path):
    # pytest's tmp_path sits under /tmp/pytest-of-<user> (0700): as root the postgres user cannot
    # reach it, so the harness falls back to its own temp directory.
    with PostgresServer(workdir=tmp_path / "pg", load_demo_schema=False) as pg:
        assert pg.psql("SELECT 1", db="postgres").strip() == "1"
        assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'app'", db="postgres").strip() == "0"
        pid = pg.postmaster_pid()
        assert pid and Path(f"/proc/{pid}").exists()
        where = pg.dir
        owned = pg._owns_dir
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "postmaster still running after stop()"
    if owned:
        assert not where.exists()


def test_start_failure_reports_log_tail():
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(PostgresError) as info:
            PostgresServer(port=port, load_demo_schema=False)
        msg = str(info.value)
        assert "failed to start" in msg and "tail of" in msg
        assert "could not bind" in msg or "Address already in use" in msg
    finally:
        holder.close()


def test_free_port_is_loopback_bindable():
    p = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
