"""TLS on both sides of the PostgreSQL gateway: clients to the gateway, the gateway to the database."""
from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path

import pytest

from postgres import PostgresServer
from test_postgres_gateway import pg_config, psql, token


def make_certificates(directory: Path) -> dict[str, Path]:
    """A private CA and a server certificate for localhost / 127.0.0.1, made with openssl."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Gatehouse Test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    (directory / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Other CA",
        "-keyout", "other.key", "-out", "other-ca.pem")
    return {name: directory / f"{name}" for name in ("ca.pem", "server.pem", "server.key", "other-ca.pem")}


@pytest.fixture(scope="module")
def certificates():
    directory = Path(tempfile.mkdtemp(prefix="gatehouse-certs-"))
    os.chmod(directory, 0o755)
    certs = make_certificates(directory)
    for path in certs.values():
        os.chmod(path, 0o644)
    os.chmod(certs["server.key"], 0o600)
    if os.geteuid() == 0:
        # PostgreSQL insists on owning its key file; the gateway (root) can still read it.
        postgres = pwd.getpwnam("postgres")
        os.chown(certs["server.key"], postgres.pw_uid, postgres.pw_gid)
    return certs


def tls_listener(certificates, require: bool) -> str:
    return f"""
  tls:
    certificate: {certificates['server.pem']}
    key: {certificates['server.key']}
    require: {'true' if require else 'false'}
"""


@pytest.fixture
def env(pg):
    return {f"GH_{m.upper()}_PASSWORD": pg.passwords[f"gh_{m}"] for m in ("scram", "md5", "plain")}


def test_clients_negotiate_tls_and_plain_clients_can_be_refused(pg, gateway_factory, certificates, env):
    config = pg_config(pg).replace("  max_recorded_rows: 5\n", "  max_recorded_rows: 5\n" + tls_listener(certificates, require=True))
    gw = gateway_factory(config, env=env)
    secure = psql(gw, "SELECT 1", extra=[], dbname="app-scram")  # sslmode=disable in the helper
    assert secure.returncode != 0 and "requires TLS" in secure.stderr

    password = token(gw)
    result = subprocess.run(
        ["psql", f"host=127.0.0.1 port={gw.pg_port} dbname=app-scram user=alice sslmode=verify-ca sslrootcert={certificates['ca.pem']}",
         "-X", "-At", "-c", "SELECT count(*) FROM customers"],
        capture_output=True, text=True, env={**os.environ, "PGPASSWORD": password}, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "50"


def upstream_config(server, ca: Path, name: str) -> str:
    return f"""
  - name: {name}
    type: postgres
    upstream: postgres://localhost:{server.port}/app
    username: gh_scram
    password: env:GH_TLS_PASSWORD
    tls: verify-full
    ca_file: {ca}
    allow:
      groups: [dev]
"""


def test_the_gateway_verifies_the_database_certificate(gateway_factory, certificates, pg, env):
    settings = {"ssl": "on", "ssl_cert_file": f"'{certificates['server.pem']}'", "ssl_key_file": f"'{certificates['server.key']}'"}
    with PostgresServer(settings=settings) as server:
        config = pg_config(pg) + upstream_config(server, certificates["ca.pem"], "tls-db") + upstream_config(server, certificates["other-ca.pem"], "wrong-ca")
        gw = gateway_factory(config, env={**env, "GH_TLS_PASSWORD": server.passwords["gh_scram"]})
        result = psql(gw, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", dbname="tls-db")
        assert result.returncode == 0, result.stderr + gw.log_text()[-2000:]
        assert result.stdout.strip() == "t"

        refused = psql(gw, "SELECT 1", dbname="wrong-ca")
        assert refused.returncode != 0 and "certificate is not trusted" in refused.stderr
