"""Shared fixtures: the gatehouse binary, a gateway process on loopback, a real OIDC provider."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent / "idp"))
sys.path.insert(0, str(Path(__file__).parent / "pg"))
from glewlwyd import Glewlwyd, free_port  # noqa: E402
from postgres import PostgresServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("GATEHOUSE_BIN", REPO / ".build" / "debug" / "gatehouse"))


def gatehouse(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Runs the CLI and returns its result (stdout/stderr as text)."""
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=60, check=check, **kwargs)


def eventually(attempt, accept, timeout: float = 20.0, pause: float = 0.2):
    """Calls `attempt()` until `accept(result)` holds or `timeout` seconds pass; returns the last
    result. For states the gateway reaches after a delay it documents (an audit index that has been
    failing for longer than the busy timeout, and its recovery)."""
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if accept(result) or time.monotonic() > deadline:
            return result
        time.sleep(pause)


class Gateway:
    """A `gatehouse serve` process with its own config and state directory."""

    def __init__(self, workdir: Path, extra_config: str = "", dev: bool = True, audit_config: str = "", env: dict | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.pg_port = free_port()
        self.http_port = free_port()
        self.env = env
        extra_config = extra_config.replace("PG_LISTEN_PORT", str(self.pg_port)).replace("HTTP_LISTEN_PORT", str(self.http_port))
        self.config = workdir / "gatehouse.yaml"
        self.config.write_text(
            ("dev: true\n" if dev else "")
            + f"""
gateway:
  node: test-node
  state_dir: state
admin:
  listen: 127.0.0.1:{self.port}
audit:
  checkpoint_every: 5
{audit_config}
{extra_config}
"""
        )
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return gatehouse(*args, "--config", str(self.config), check=check)

    def start(self, wait_ready: bool = True) -> "Gateway":
        self.log = open(self.workdir / "gateway.log", "ab")
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, **(self.env or {})},
        )
        line = self.process.stdout.readline()
        assert line.startswith("gatehouse ready:"), f"unexpected first line {line!r}; log: {self.log_text()}"
        if wait_ready:
            deadline = time.time() + 20
            while True:
                r = requests.get(self.url + "/readyz", timeout=5)
                if r.status_code == 200:
                    break
                assert time.time() < deadline, f"gateway never became ready: {r.text}"
                time.sleep(0.1)
        return self

    def whoami(self, token: str | None, **headers: str) -> requests.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(self.url + "/v1/whoami", headers=headers, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        self.log.close()
        return code

    def log_text(self) -> str:
        path = self.workdir / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def events(self, *args: str) -> list[dict]:
        import json

        result = self.cli("audit", "list", "--json", *args, check=True)
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    return tmp_path


@pytest.fixture
def gateway_factory(workdir: Path):
    started: list[Gateway] = []

    def make(extra_config: str = "", dev: bool = True, start: bool = True, audit_config: str = "", env: dict | None = None) -> Gateway:
        gw = Gateway(workdir, extra_config, dev, audit_config, env)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        if gw.process is not None:
            gw.process.kill()
            gw.process.wait()


@pytest.fixture
def idp(workdir: Path):
    with Glewlwyd(workdir / "idp", free_port()) as provider:
        yield provider


@pytest.fixture(scope="session")
def pg():
    """One throwaway PostgreSQL for the whole run (initdb is the slow part)."""
    with PostgresServer() as server:
        server.pgbench_init("app")
        yield server
