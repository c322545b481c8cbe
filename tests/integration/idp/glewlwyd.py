"""Test harness: a real OIDC provider (Debian's glewlwyd) on 127.0.0.1.

Usage::

    from glewlwyd import Glewlwyd

    with Glewlwyd(tmp_path / "idp", 4601) as idp:
        tok = idp.token()                 # RS256 JWT access token (client_credentials)
        idp.issuer, idp.discovery_url, idp.jwks_uri, idp.audience
        new_kid = idp.rotate_key()        # new RSA key + new kid, old kid dropped from JWKS

Requires the Debian package ``glewlwyd`` (``apt-get install -y glewlwyd``) and the PyPI
packages ``requests`` and ``cryptography``. Works as root and as an ordinary user: glewlwyd
runs as whoever starts it; only ``workdir`` must be writable.

Access-token claims (client_credentials, with the RFC 8707 ``resource`` parameter that
``token()`` sends by default)::

    header  {"typ": "at+jwt", "alg": "RS256", "kid": "<kid>"}
    payload {"iss": issuer, "aud": audience, "client_id": client_id, "sub": client_id,
             "iat": .., "nbf": .., "exp": iat + token_ttl, "jti": "..",
             "type": "access_token", "scope": "gatehouse"}

Without a ``resource`` parameter glewlwyd sets ``aud`` to the granted scope list
(``"gatehouse"``); ``token(resource=None)`` gives such a token.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

GLEWLWYD_CONF = Path("/etc/glewlwyd/glewlwyd.conf")
# Schema + default data (admin/password user, database user/client backends). The dbconfig
# copy is always installed; the /usr/share/doc copy may be stripped by minimal images.
SCHEMA_CANDIDATES = (
    Path("/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3"),
    Path("/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz"),
    Path("/usr/share/doc/glewlwyd/database/init.sqlite3.sql"),
)

ADMIN_USER = "admin"
ADMIN_PASSWORD = "password"  # set by the schema file shipped in the package


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (small race, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64u_int(i: int) -> str:
    raw = i.to_bytes((i.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_rsa_jwk(kid: str, bits: int = 2048) -> dict[str, str]:
    """A private RSA JWK (RS256, with kid) as glewlwyd's ``jwks-private`` expects."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pn = key.private_numbers()
    pub = pn.public_numbers
    return {
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
        "n": _b64u_int(pub.n),
        "e": _b64u_int(pub.e),
        "d": _b64u_int(pn.d),
        "p": _b64u_int(pn.p),
        "q": _b64u_int(pn.q),
        "dp": _b64u_int(pn.dmp1),
        "dq": _b64u_int(pn.dmq1),
        "qi": _b64u_int(pn.iqmp),
    }


def decode_jwt_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, payload) of a compact JWS, without checking the signature."""

    def part(seg: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))

    h, p, _ = token.split(".")
    return part(h), part(p)


class GlewlwydError(RuntimeError):
    pass


class Glewlwyd:
    """glewlwyd subprocess + sqlite db in ``workdir``, configured for client_credentials."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        plugin_name: str = "oidc",
        scope: str = "gatehouse",
        client_id: str = "agent-client",
        client_secret: str | None = None,
        audience: str = "https://gatehouse.test/",
        extra_audiences: tuple[str, ...] = ("https://other.test/",),
        token_ttl: int = 3600,
        log_level: str = "INFO",
        binary: str | None = None,
        startup_timeout: float = 15.0,
        keep_db: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.plugin_name = plugin_name
        self.scope = scope
        self._client_id = client_id
        self._client_secret = client_secret or secrets.token_urlsafe(24)
        self._audience = audience
        # Other resources the client may also request (for wrong-audience tests).
        self.extra_audiences = tuple(extra_audiences)
        self.token_ttl = token_ttl
        self.log_level = log_level
        self.binary = binary or os.environ.get("GLEWLWYD_BIN") or shutil.which("glewlwyd") or "/usr/bin/glewlwyd"
        self.startup_timeout = startup_timeout
        self.keep_db = keep_db

        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.base_url}/api"
        self.config_path = self.workdir / "glewlwyd.conf"
        self.db_config_path = self.workdir / "glewlwyd-db.conf"
        self.db_path = self.workdir / "glewlwyd.sqlite3"
        self.log_path = self.workdir / "glewlwyd.log"  # glewlwyd's own log (log_mode=file)
        self.console_log_path = self.workdir / "glewlwyd.console.log"  # stdout/stderr

        self._proc: subprocess.Popen[bytes] | None = None
        self._console = None
        self._admin: requests.Session | None = None
        self._admin_login_at = 0.0
        self._jwks_private: list[dict[str, str]] = []
        self._kid: str | None = None
        self._kid_counter = 0
        self.startup_seconds: float | None = None  # process start -> HTTP answers
        self.ready_seconds: float | None = None  # process start -> token endpoint usable

    # ------------------------------------------------------------------ properties
    @property
    def issuer(self) -> str:
        return f"{self.api}/{self.plugin_name}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def client_secret(self) -> str:
        return self._client_secret

    @property
    def audience(self) -> str:
        """The ``aud`` claim of tokens from ``token()`` (sent as RFC 8707 ``resource``)."""
        return self._audience

    def current_kid(self) -> str:
        assert self._kid is not None, "not started"
        return self._kid

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Glewlwyd":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None:
            raise GlewlwydError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._init_db()
        t0 = time.monotonic()
        self.log_path.write_text("")  # fresh logs per start (the bind check reads it)
        self._console = open(self.console_log_path, "wb")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_http(t0)
            self.startup_seconds = time.monotonic() - t0
            self._configure()
            self.ready_seconds = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._console is not None:
            self._console.close()
            self._console = None
        if not self.keep_db:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(str(self.db_path) + suffix).unlink(missing_ok=True)

    def log_tail(self, n: int = 40) -> str:
        out = []
        for p in (self.console_log_path, self.log_path):
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()[-n:]
                out.append(f"--- {p.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # ------------------------------------------------------------------ setup
    def _write_config(self) -> None:
        conf = GLEWLWYD_CONF.read_text()
        overrides: list[str] = []

        def setting(name: str, value: str) -> None:
            # libconfig rejects duplicate settings: drop the active line(s), add ours on top.
            nonlocal conf
            conf = re.sub(rf"^[ \t]*{re.escape(name)}[ \t]*=.*$", "", conf, flags=re.M)
            overrides.append(f"{name}={value}")

        setting("port", str(self.port))
        setting("bind_address", '"127.0.0.1"')
        setting("external_url", f'"{self.base_url}"')
        setting("log_mode", '"file"')
        setting("log_level", f'"{self.log_level}"')
        setting("log_file", f'"{self.log_path}"')
        # The package's db config (/etc/glewlwyd/glewlwyd-db.conf) is mode 0660
        # glewlwyd:root, unreadable by other users, and only says "sqlite3 at <path>":
        # write our own with the same structure.
        self.db_config_path.write_text(
            "database =\n{\n"
            '  type = "sqlite3"\n'
            f'  path = "{self.db_path}"\n'
            "};\n"
        )
        conf, n = re.subn(r'^\s*@include\s+".*glewlwyd-db\.conf"\s*$',
                          lambda _m: f'@include "{self.db_config_path}"', conf, flags=re.M)
        if n != 1:
            conf += f'\n@include "{self.db_config_path}"\n'
        conf = "# generated by tests/integration/idp/glewlwyd.py\n" + "\n".join(overrides) + "\n" + conf
        self.config_path.write_text(conf)

    def _init_db(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)
        for cand in SCHEMA_CANDIDATES:
            if cand.exists():
                sql = (gzip.open(cand, "rt") if cand.suffix == ".gz" else open(cand)).read()
                break
        else:
            raise GlewlwydError("glewlwyd sqlite schema not found; apt-get install -y glewlwyd")
        con = sqlite3.connect(self.db_path)
        try:
            con.executescript(sql)
            con.commit()
        finally:
            con.close()

    def _wait_http(self, t0: float) -> None:
        deadline = t0 + self.startup_timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                rc = None if self._proc is None else self._proc.returncode
                raise GlewlwydError(f"glewlwyd exited during startup (rc={rc})\n{self.log_tail()}")
            try:
                requests.get(f"{self.api}/", timeout=1)  # any HTTP answer (404) = up
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                # Port taken: glewlwyd logs "started", then "Failed to bind", then exits;
                # whatever holds the port may have answered us.
                if "Failed to bind" in log or "Error starting glewlwyd webserver" in log:
                    raise GlewlwydError(f"glewlwyd could not bind 127.0.0.1:{self.port}\n{self.log_tail()}")
                if self._proc.poll() is None:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise GlewlwydError(f"glewlwyd did not answer within {self.startup_timeout}s\n{self.log_tail()}")
            time.sleep(0.02)

    def _admin_session(self) -> requests.Session:
        # The g_admin scope in the shipped schema has password_max_age=600: a session older
        # than 10 minutes gets 401 on admin calls, so log in again well before that.
        if self._admin is None or time.monotonic() - self._admin_login_at > 300:
            if self._admin is not None:
                self._admin.close()
            s = requests.Session()
            r = s.post(f"{self.api}/auth/", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD}, timeout=10)
            self._check(r, "admin login")
            self._admin, self._admin_login_at = s, time.monotonic()
        return self._admin

    def _check(self, r: requests.Response, what: str) -> requests.Response:
        if r.status_code != 200:
            raise GlewlwydError(f"{what}: HTTP {r.status_code} {r.text[:500]}\n{self.log_tail(15)}")
        return r

    def _next_kid(self) -> str:
        self._kid_counter += 1
        return f"gw-{self._kid_counter}-{secrets.token_hex(4)}"

    def _plugin_parameters(self) -> dict[str, Any]:
        return {
            "iss": self.issuer,
            "jwt-type": "rsa",
            "jwt-key-size": "256",
            # Keys: private JWKS; the public JWKS endpoint is derived from it.
            "jwks-private": json.dumps({"keys": self._jwks_private}),
            "default-kid": self._kid,
            "jwks-show": True,
            "jwks-uri": "",
            "jwks-public": "",
            "jwks-public-uri": "",
            "client-sign_kid-parameter": "",
            "access-token-duration": self.token_ttl,
            "refresh-token-duration": 1209600,
            "code-duration": 600,
            "refresh-token-rolling": True,
            "refresh-token-one-use": "never",
            # client_credentials is a "non-OIDC" (plain OAuth2) grant in glewlwyd.
            "allow-non-oidc": True,
            "auth-type-client-enabled": True,
            "auth-type-code-enabled": True,
            "auth-type-token-enabled": False,
            "auth-type-id-token-enabled": True,
            "auth-type-none-enabled": False,
            "auth-type-password-enabled": False,
            "auth-type-device-enabled": True,
            "auth-type-refresh-enabled": True,
            "scope": [],
            "additional-parameters": [],
            "claims": [],
            "secret-type": "public",  # sub = client_id, not a pairwise hash
            "allowed-scope": ["openid", self.scope],
            "address-claim": {"type": "no", "formatted": "", "street_address": "", "locality": "",
                              "region": "", "postal_code": "", "country": "", "mandatory": False},
            "name-claim": "no",
            "email-claim": "no",
            "scope-claim": "no",
            "pkce-allowed": False,
            "introspection-revocation-allowed": False,
            "register-client-allowed": False,
            "session-management-allowed": False,
            "request-parameter-allow": False,
            "encrypt-out-token-allow": False,
            "oauth-dpop-allowed": False,
            "oauth-rar-allowed": False,
            "oauth-par-allowed": False,
            "oauth-ciba-allowed": False,
            # RFC 8707 resource indicators: aud = requested resource (else = scope list).
            "resource-allowed": True,
            "resource-scope": {self.scope: [self._audience, *self.extra_audiences]},
            "resource-client-property": "resource",
            "resource-scope-and-client-property": False,
        }

    def _configure(self) -> None:
        s = self._admin_session()
        self._kid = self._next_kid()
        self._jwks_private = [new_rsa_jwk(self._kid)]
        self._check(s.post(f"{self.api}/scope/", json={
            "name": self.scope, "display_name": self.scope, "description": "Gatehouse tests",
            "password_required": False, "password_max_age": 0, "scheme": {},
        }, timeout=10), "add scope")
        self._check(s.post(f"{self.api}/mod/plugin/", json={
            "module": "oidc", "name": self.plugin_name, "display_name": "OIDC",
            "parameters": self._plugin_parameters(), "order_rank": 0, "enabled": True,
        }, timeout=10), "add oidc plugin")
        self._check(s.post(f"{self.api}/client/", json={
            "client_id": self._client_id,
            "name": self._client_id,
            "enabled": True,
            "confidential": True,
            "password": self._client_secret,  # what client_secret_basic/post is checked against
            "client_secret": self._client_secret,
            "scope": [self.scope],
            "authorization_type": ["client_credentials"],
            # Without this every token request is refused with 403.
            "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
            "redirect_uri": [],
            "resource": [self._audience, *self.extra_audiences],
        }, timeout=10), "add client")
        self._wait_jwks_kid(self._kid)

    def _wait_jwks_kid(self, kid: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = requests.get(self.jwks_uri, timeout=2)
                if r.status_code == 200 and kid in [k.get("kid") for k in r.json().get("keys", [])]:
                    return
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise GlewlwydError(f"kid {kid} not published at {self.jwks_uri}\n{self.log_tail(15)}")
            time.sleep(0.02)

    # ------------------------------------------------------------------ operations
    def jwks(self) -> dict[str, Any]:
        r = requests.get(self.jwks_uri, timeout=5)
        return self._check(r, "jwks").json()

    def discovery(self) -> dict[str, Any]:
        return self._check(requests.get(self.discovery_url, timeout=5), "discovery").json()

    def token_response(self, *, resource: str | None = "", scope: str | None = None,
                       auth: str = "basic") -> requests.Response:
        """Raw token endpoint response. resource="" -> self.audience; None -> no resource."""
        data = {"grant_type": "client_credentials", "scope": scope or self.scope}
        if resource == "":
            resource = self._audience
        if resource is not None:
            data["resource"] = resource
        kw: dict[str, Any] = {}
        if auth == "basic":
            kw["auth"] = (self._client_id, self._client_secret)
        else:
            data.update(client_id=self._client_id, client_secret=self._client_secret)
        return requests.post(self.token_endpoint, data=data, timeout=10, **kw)

    def token(self, *, resource: str | None = "", scope: str | None = None, auth: str = "basic") -> str:
        """A fresh access token (client_credentials). aud == self.audience by default."""
        r = self._check(self.token_response(resource=resource, scope=scope, auth=auth), "token")
        return r.json()["access_token"]

    def rotate_key(self, keep_old: bool = False) -> str:
        """Sign with a NEW RSA key under a NEW kid; returns that kid.

        keep_old=False (default): the JWKS then publishes only the new key (old kid gone,
        tokens signed with it no longer verify against the JWKS).
        keep_old=True: the old keys stay published (new key first, and the default signer).
        """
        s = self._admin_session()
        kid = self._next_kid()
        new = new_rsa_jwk(kid)
        self._jwks_private = [new, *self._jwks_private] if keep_old else [new]
        self._kid = kid
        self._check(s.put(f"{self.api}/mod/plugin/{self.plugin_name}", json={
            "display_name": "OIDC", "parameters": self._plugin_parameters(), "order_rank": 0, "enabled": True,
        }, timeout=10), "update oidc plugin")
        # PUT only stores the parameters; the running instance keeps its old keys until reset.
        self._check(s.put(f"{self.api}/mod/plugin/{self.plugin_name}/reset", timeout=10), "reset oidc plugin")
        self._wait_jwks_kid(kid)
        return kid
