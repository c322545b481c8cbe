"""Test harness: a throwaway PostgreSQL 15 on 127.0.0.1 with password-protected login roles.

Usage::

    from postgres import PostgresServer

    with PostgresServer() as pg:                       # initdb + start + roles + `app` database
        pg.host, pg.port                               # "127.0.0.1", free port
        pg.passwords["gh_scram"]                       # random per instance
        pg.dsn(user="gh_md5", dbname="app")            # libpq keyword string, password included
        pg.url(user="gh_plain")                        # postgresql://... (asyncpg, JDBC-ish)
        pg.psql("SELECT count(*) FROM customers")      # -> "50\\n" (psql over TCP, -At)
        pg.pgbench_init("app")                         # pgbench -i -s 1, tables usable by all gh_*
        pg.pgbench("-T", "2", db="app")                # CompletedProcess

Roles (all LOGIN; TCP from 127.0.0.1 always needs a password, chosen per user by pg_hba)::

    admin_user  superuser            scram-sha-256   (test setup only)
    gh_scram    owns database `app`   scram-sha-256
    gh_md5      stored md5 hash       md5
    gh_plain    stored scram hash     password (cleartext on the wire)

Only the Python standard library is used, so the module also runs under a bare ``python3``.
PostgreSQL binaries come from ``/usr/lib/postgresql/15/bin`` (Debian ``postgresql-15``) or
``$GATEHOUSE_PG_BINDIR``. initdb refuses to run as root: as root, initdb/pg_ctl run as the
``postgres`` OS user via ``runuser`` in a directory that user owns.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

REPO = Path(__file__).resolve().parents[3]
DEMO_SCHEMA = REPO / "examples" / "demo-schema.sql"
DEFAULT_BINDIR = Path(os.environ.get("GATEHOUSE_PG_BINDIR", "/usr/lib/postgresql/15/bin"))

ADMIN_USER = "admin_user"
GATEWAY_ROLES = ("gh_scram", "gh_md5", "gh_plain")
ROLES = (ADMIN_USER, *GATEWAY_ROLES)
# pg_hba method for each role on TCP from 127.0.0.1.
AUTH_METHODS = {
    ADMIN_USER: "scram-sha-256",
    "gh_scram": "scram-sha-256",
    "gh_md5": "md5",
    "gh_plain": "password",
}
APP_DB = "app"


class PostgresError(RuntimeError):
    """initdb, start or a setup statement failed; the message carries the relevant output."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (small race, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote_literal(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without libpq variables (PGHOST, PGSERVICE, ... would leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    env.pop("LANG", None)
    if extra:
        env.update(extra)
    return env


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.

    Parameters:
        port: TCP port (default: a free one; retried on a bind race).
        workdir: where to put the cluster (default: a fresh ``mkdtemp``). As root the directory
            must be reachable by the ``postgres`` user; if it is not (e.g. pytest's
            ``/tmp/pytest-of-root`` is 0700) a fresh ``mkdtemp`` is used instead: ``self.dir``
            always tells where the cluster really is.
        passwords: override some or all role passwords (default: random, URL-safe).
        load_demo_schema: create database ``app`` (owner gh_scram) with examples/demo-schema.sql.
        keep: leave the directory behind after ``stop()`` (for post-mortems).
        settings: extra ``postgresql.conf`` lines, e.g. ``{"max_connections": "300"}``.
    """

    def __init__(
        self,
        port: int | None = None,
        workdir: str | os.PathLike | None = None,
        passwords: Mapping[str, str] | None = None,
        load_demo_schema: bool = True,
        keep: bool = False,
        bindir: str | os.PathLike | None = None,
        settings: Mapping[str, str] | None = None,
        start: bool = True,
    ):
        self.host = "127.0.0.1"
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.bindir = Path(bindir) if bindir else DEFAULT_BINDIR
        self.keep = keep
        self.load_demo_schema = load_demo_schema
        self.settings = dict(settings or {})
        self.passwords: dict[str, str] = {r: secrets.token_urlsafe(18) for r in ROLES}
        if passwords:
            unknown = set(passwords) - set(ROLES)
            if unknown:
                raise ValueError(f"unknown roles {sorted(unknown)}; known: {ROLES}")
            self.passwords.update(passwords)
        self.as_root = os.geteuid() == 0
        self._os_user = pwd.getpwnam("postgres") if self.as_root else None
        self._requested_workdir = Path(workdir) if workdir else None
        self.dir: Path | None = None
        self.data: Path | None = None
        self.socket_dir: Path | None = None
        self.log_path: Path | None = None
        self._owns_dir = False
        self.running = False
        self.timings: dict[str, float] = {}
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "PostgresServer":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "PostgresServer":
        if self.running:
            return self
        for tool in ("initdb", "pg_ctl", "psql", "pgbench"):
            if not (self.bindir / tool).exists():
                raise PostgresError(
                    f"{self.bindir / tool} not found: install the Debian package postgresql-15 "
                    "(or set GATEHOUSE_PG_BINDIR)"
                )
        atexit.register(self.stop)
        try:
            self._make_dirs()
            t0 = time.monotonic()
            self._initdb()
            self.timings["initdb"] = time.monotonic() - t0
            t0 = time.monotonic()
            attempts = 1 if self._fixed_port else 3
            for attempt in range(attempts):
                self._write_config()
                try:
                    self._pg_ctl_start()
                    break
                except PostgresError as e:
                    if attempt + 1 < attempts and "could not bind" in str(e):
                        self.port = free_port()  # lost the free-port race: try another one
                        continue
                    raise
            self.timings["start"] = time.monotonic() - t0
            self.running = True
            t0 = time.monotonic()
            self._setup_roles()
            if self.load_demo_schema:
                self._setup_app_db()
            self.timings["setup"] = time.monotonic() - t0
        except BaseException:
            self.stop()  # the exception carries the log tail; the directory goes unless keep=True
            raise
        return self

    def stop(self) -> None:
        """Stops the server (fast shutdown, then immediate) and removes the directory unless keep."""
        self.running = False
        if self.data is not None and (self.data / "postmaster.pid").exists():
            r = self._run_as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop"],
                check=False,
            )
            if r.returncode != 0:
                self._run_as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                    check=False,
                )
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass
        if self._owns_dir and not self.keep and self.dir is not None and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ connection info

    def dsn(self, user: str = "gh_scram", dbname: str = APP_DB, password: bool = True, **extra: str) -> str:
        """libpq keyword/value connection string (psycopg, psql, PostgresNIO-style config)."""
        parts = {"host": self.host, "port": str(self.port), "user": user, "dbname": dbname}
        if password and user in self.passwords:
            parts["password"] = self.passwords[user]
        parts["sslmode"] = "disable"
        parts.update(extra)

        def q(v: str) -> str:
            return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" if (not v or any(c in v for c in " '\\")) else v

        return " ".join(f"{k}={q(v)}" for k, v in parts.items())

    def url(self, user: str = "gh_scram", dbname: str = APP_DB, password: bool = True) -> str:
        """postgresql://user:password@127.0.0.1:port/dbname (asyncpg, SQLAlchemy, ...)."""
        from urllib.parse import quote

        auth = quote(user, safe="")
        if password and user in self.passwords:
            auth += ":" + quote(self.passwords[user], safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def jdbc_url(self, dbname: str = APP_DB) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{dbname}?sslmode=disable"

    def env(self, user: str = "gh_scram", dbname: str = APP_DB, password: str | None = None) -> dict[str, str]:
        """A clean environment (no inherited PG*) for libpq tools connecting over TCP as ``user``."""
        return _clean_env({
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": user,
            "PGDATABASE": dbname,
            "PGPASSWORD": password if password is not None else self.passwords.get(user, ""),
            "PGSSLMODE": "disable",
            "PGCONNECT_TIMEOUT": "10",
            "PGAPPNAME": "gatehouse-tests",
        })

    # ------------------------------------------------------------------ helpers

    def psql(
        self,
        sql: str,
        user: str = ADMIN_USER,
        db: str = APP_DB,
        password: str | None = None,
        check: bool = True,
        tuples_only: bool = True,
        timeout: float = 60,
    ) -> str:
        """Runs ``sql`` (any psql script, fed on stdin) over TCP; returns stdout.

        With ``tuples_only`` (default) the output is unaligned, without headers (``psql -At``).
        Raises PostgresError with stderr when psql fails and ``check`` is true.
        """
        r = self.psql_run(sql, user=user, db=db, password=password, tuples_only=tuples_only, timeout=timeout)
        if check and r.returncode != 0:
            raise PostgresError(f"psql as {user} on {db} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def psql_run(self, sql: str, user: str = ADMIN_USER, db: str = APP_DB, password: str | None = None,
                 tuples_only: bool = True, timeout: float = 60, args: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """Like psql() but returns the CompletedProcess (stdout, stderr, returncode)."""
        cmd = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        if tuples_only:
            cmd.insert(1, "-At")
        cmd += list(args)
        return subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=timeout,
                              env=self.env(user, db, password))

    def create_database(self, name: str, owner: str = "gh_scram") -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = {_quote_literal(name)}", db="postgres")
        if not exists.strip():
            self.psql(f"CREATE DATABASE {_quote_ident(name)} OWNER {_quote_ident(owner)}", db="postgres")

    def pgbench_init(self, db: str = APP_DB, scale: int = 1, user: str = "gh_scram") -> None:
        """``pgbench -i -s scale`` in ``db`` (created, owned by ``user``, if missing) as ``user``;
        then every gh_* role may read and write the pgbench tables."""
        self.create_database(db, owner=user)
        r = self.pgbench("-i", "-s", str(scale), "-q", db=db, user=user, timeout=300)
        if r.returncode != 0:
            raise PostgresError(f"pgbench -i failed: {r.stderr.strip()[-2000:]}")
        others = ", ".join(_quote_ident(r) for r in GATEWAY_ROLES if r != user)
        if others:
            self.psql(
                f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON pgbench_accounts, pgbench_branches,"
                f" pgbench_history, pgbench_tellers TO {others};",
                user=user, db=db,
            )

    def pgbench(self, *args: str, db: str = APP_DB, user: str = "gh_scram", timeout: float = 600,
                host: str | None = None, port: int | None = None, password: str | None = None) -> subprocess.CompletedProcess:
        """Runs pgbench with ``args`` against this server (or ``host``/``port``, e.g. a gateway)."""
        env = self.env(user, db, password)
        if host is not None:
            env["PGHOST"] = host
        if port is not None:
            env["PGPORT"] = str(port)
        return subprocess.run([str(self.bindir / "pgbench"), *args], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return None

    # ------------------------------------------------------------------ internals

    def _owner_can_use(self, path: Path) -> bool:
        r = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(path), "-a", "-x", str(path)],
                           capture_output=True)
        return r.returncode == 0

    def _make_dirs(self) -> None:
        if self._requested_workdir is not None:
            self._requested_workdir.mkdir(parents=True, exist_ok=True)
            self.dir = self._requested_workdir
            if self.as_root:
                os.chown(self.dir, self._os_user.pw_uid, self._os_user.pw_gid)
                if not self._owner_can_use(self.dir):
                    self.dir = None  # a parent is closed to the postgres user: fall back below
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="gatehouse-pg-"))
            self._owns_dir = True
        if (self.dir / "data").exists():
            raise PostgresError(f"{self.dir / 'data'} already exists; use a fresh workdir")
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.log_path = self.dir / "postgres.log"
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.dir / "admin.pw"
        pwfile.write_text(self.passwords[ADMIN_USER] + "\n")
        pwfile.chmod(0o600)
        if self.as_root:
            for p in (self.dir, self.socket_dir, pwfile):
                os.chown(p, self._os_user.pw_uid, self._os_user.pw_gid)
            self.dir.chmod(0o700)

    def _run_as_owner(self, cmd: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=timeout, env=_clean_env())
        if check and r.returncode != 0:
            raise PostgresError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def _initdb(self) -> None:
        pwfile = self.dir / "admin.pw"
        try:
            self._run_as_owner([
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", ADMIN_USER, f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale",
                "--no-sync", "--no-instructions",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        # pg_hba: first matching line wins. Every connection needs a password.
        hba = ["# Written by tests/integration/pg/postgres.py", "local all all scram-sha-256"]
        for role in GATEWAY_ROLES:
            hba.append(f"host all {role} 127.0.0.1/32 {AUTH_METHODS[role]}")
        hba += ["host all all 127.0.0.1/32 scram-sha-256", "host all all 0.0.0.0/0 reject",
                "host all all ::/0 reject"]
        self._write_owned(self.data / "pg_hba.conf", "\n".join(hba) + "\n")

    def _write_config(self) -> None:
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "password_encryption": "'scram-sha-256'",
            "max_connections": "200",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_connections": "on",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "lc_messages": "'C'",
            "timezone": "'UTC'",
            "ssl": "off",
        }
        conf.update(self.settings)
        body = "# gatehouse test overrides\n" + "".join(f"{k} = {v}\n" for k, v in conf.items())
        self._write_owned(self.data / "postgresql.gatehouse.conf", body)
        main = self.data / "postgresql.conf"
        text = main.read_text()
        if "include = 'postgresql.gatehouse.conf'" not in text:
            self._write_owned(main, text + "\ninclude = 'postgresql.gatehouse.conf'\n")

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        if self.as_root:
            os.chown(path, self._os_user.pw_uid, self._os_user.pw_gid)
        path.chmod(0o600)

    def _pg_ctl_start(self) -> None:
        r = self._run_as_owner(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "30", "start"],
            check=False,
        )
        if r.returncode != 0:
            raise PostgresError(
                f"PostgreSQL failed to start on {self.host}:{self.port} (pg_ctl exit {r.returncode}).\n"
                f"pg_ctl: {(r.stdout + r.stderr).strip()}\n--- tail of {self.log_path} ---\n{self.log_tail()}"
            )

    def _setup_roles(self) -> None:
        pw = {r: _quote_literal(p) for r, p in self.passwords.items()}
        self.psql(
            f"""
            CREATE ROLE gh_scram LOGIN PASSWORD {pw['gh_scram']};
            SET password_encryption = 'md5';
            CREATE ROLE gh_md5 LOGIN PASSWORD {pw['gh_md5']};
            RESET password_encryption;
            CREATE ROLE gh_plain LOGIN PASSWORD {pw['gh_plain']};
            """,
            db="postgres",
        )

    def _setup_app_db(self) -> None:
        self.create_database(APP_DB, owner="gh_scram")
        r = self.psql_run(DEMO_SCHEMA.read_text(), user="gh_scram", db=APP_DB)
        if r.returncode != 0:
            raise PostgresError(f"loading {DEMO_SCHEMA} failed: {r.stderr.strip()}")
        others = "gh_md5, gh_plain"
        self.psql(
            f"""
            GRANT USAGE, CREATE ON SCHEMA public TO {others};
            GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA public TO {others};
            GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {others};
            ALTER DEFAULT PRIVILEGES FOR ROLE gh_scram IN SCHEMA public
                GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON TABLES TO {others};
            ALTER DEFAULT PRIVILEGES FOR ROLE gh_scram IN SCHEMA public
                GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {others};
            """,
            user="gh_scram", db=APP_DB,
        )


if __name__ == "__main__":  # manual smoke run: python3 tests/integration/pg/postgres.py
    t = time.monotonic()
    with PostgresServer() as pg:
        print("up in %.2fs %s" % (time.monotonic() - t, {k: round(v, 3) for k, v in pg.timings.items()}))
        print(pg.dsn())
        print(pg.psql("SELECT count(*) FROM customers; SELECT count(*) FROM orders;", user="gh_md5"))
