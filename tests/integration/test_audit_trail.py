"""The audit trail as an operator sees it: durable, checkpointed, and tamper-evident."""
from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
import requests

from conftest import REPO, eventually, gatehouse


def make_events(gw, count: int) -> None:
    token = gw.cli("dev", "token", "--subject", "alice", "--actor", "claude-code", check=True).stdout.strip()
    for _ in range(count):
        assert gw.whoami(token).status_code == 200


@pytest.fixture
def stopped_trail(gateway_factory):
    """A gateway that recorded 12 events and shut down cleanly (final checkpoint written)."""
    gw = gateway_factory()
    make_events(gw, 12)
    assert gw.stop() == 0
    return gw


def verify(gw) -> subprocess.CompletedProcess:
    return gw.cli("audit", "verify")


def test_a_clean_shutdown_leaves_a_verified_trail(stopped_trail):
    result = verify(stopped_trail)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("12 events, chain intact, last checkpoint signed at ")
    events = stopped_trail.events()
    assert [e["seq"] for e in events] == list(range(1, 13))
    assert all(e["record"]["principal"]["subject"] == "alice" for e in events)


def sql(gw, statement: str) -> None:
    subprocess.run(["sqlite3", str(gw.workdir / "state" / "audit.sqlite"), statement], check=True)


@pytest.mark.parametrize(
    "statement, expected",
    [
        ("UPDATE events SET body = replace(body, 'alice', 'mallory') WHERE seq = 4", "event 4 was changed"),
        ("UPDATE events SET subject = 'mallory' WHERE seq = 7", "event 7 was changed"),
        ("UPDATE events SET time_ms = time_ms + 1 WHERE seq = 2", "event 2 was changed"),
        ("DELETE FROM events WHERE seq = 1", "event 1 was removed"),
        ("DELETE FROM events WHERE seq = 6", "event 6 was removed"),
        ("DELETE FROM events WHERE seq = 12", "event 12 was removed"),
        ("DELETE FROM checkpoints WHERE seq = (SELECT max(seq) FROM checkpoints)", "checkpoint"),
    ],
)
def test_a_single_sqlite3_edit_is_detected_and_named(stopped_trail, statement, expected):
    sql(stopped_trail, statement)
    result = verify(stopped_trail)
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout, result.stdout


def test_a_swapped_pair_is_detected(stopped_trail):
    sql(stopped_trail, "UPDATE events SET seq = -seq WHERE seq IN (5, 6); "
                       "UPDATE events SET seq = 6 WHERE seq = -5; UPDATE events SET seq = 5 WHERE seq = -6;")
    result = verify(stopped_trail)
    assert result.returncode == 1 and "events 5 and 6 were swapped" in result.stdout, result.stdout


def test_events_are_committed_before_the_answer_and_survive_sigkill(gateway_factory):
    gw = gateway_factory()
    make_events(gw, 3)
    gw.stop(signal.SIGKILL)
    assert len(gw.events()) == 3
    result = verify(gw)
    # No shutdown checkpoint after a kill: the trail is whole, the tail just is not signed yet.
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("3 events, chain intact")


def test_the_gateway_fails_closed_when_the_store_cannot_be_written(gateway_factory):
    gw = gateway_factory()
    token = gw.cli("dev", "token", "--subject", "alice", check=True).stdout.strip()
    assert gw.whoami(token).status_code == 200

    # Another process holds the write lock of the trail's tables. Events are still recorded in the
    # journal, but once they have waited longer than the busy timeout (5 s) to be indexed, the
    # gateway refuses requests.
    locker = sqlite3.connect(str(gw.workdir / "state" / "audit.sqlite"), timeout=1, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        accepted = 0
        deadline = time.monotonic() + 20
        while (response := gw.whoami(token)).status_code == 200 and time.monotonic() < deadline:
            accepted += 1
            time.sleep(0.2)
        assert response.status_code == 503
        assert "audit" in response.json()["detail"]
        assert "to be indexed" in gw.log_text()
        assert requests.get(gw.url + "/readyz", timeout=30).status_code == 503
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert eventually(lambda: gw.whoami(token), lambda r: r.status_code == 200).status_code == 200
    assert gw.stop() == 0
    assert verify(gw).returncode == 0
    # What was accepted while the tables were locked was indexed afterwards: nothing was lost.
    assert len(gw.events()) >= 1 + accepted + 1


def test_list_filters_by_subject_and_time(gateway_factory):
    gw = gateway_factory()
    make_events(gw, 2)
    bob = gw.cli("dev", "token", "--subject", "bob", check=True).stdout.strip()
    assert gw.whoami(bob).status_code == 200
    assert [e["record"]["principal"]["subject"] for e in gw.events("--subject", "bob")] == ["bob"]
    assert len(gw.events("--since", "10m")) == 3
    assert gw.events("--since", "2999-01-01T00:00:00Z") == []
    text = gw.cli("audit", "list", check=True).stdout.splitlines()
    assert "bob" in text[-1] and "identity.verify allow" in text[-1]


def test_check_reports_every_problem_with_its_line(workdir):
    config = workdir / "bad.yaml"
    config.write_text(
        "admin:\n"
        "  listen: 127.0.0.1:9090\n"
        "  colour: blue\n"
        "connections:\n"
        "  - name: db\n"
        "    type: postgres\n"
        "    upstream: postgres://db.internal/app\n"
        "    password: literal-password\n"
        "  - name: db\n"
        "    type: http\n"
        "    upstream: not a url\n"
    )
    result = gatehouse("check", "--config", str(config))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"{config}:3: unknown key 'colour' in admin (expected one of: listen, tls)" in lines
    assert any(line.startswith(f"{config}:8: connections[0].password is a secret") for line in lines)
    assert any(line.startswith(f"{config}:9: connection name 'db' is already used on line 5") for line in lines)
    assert any(line.startswith(f"{config}:11: connections[1].upstream must be") for line in lines)
    assert "literal-password" not in result.stderr

    for example in sorted((REPO / "examples").glob("*.yaml")):
        ok = gatehouse("check", "--config", str(example), env={"PATH": "/usr/bin:/bin", "CORP_ISSUER": "https://idp.example.com"})
        assert ok.returncode == 0, f"{example}: {ok.stderr}"
