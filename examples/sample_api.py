#!/usr/bin/env python3
"""A small internal API for the demo and the tests: a config service and a customer export.

It stands for the kind of internal API agents are given a service key for. Every request must carry
that key (`X-Api-Key`, from the SAMPLE_API_KEY environment variable); through Gatehouse, the gateway
adds it and the agent never sees it.

    SAMPLE_API_KEY=... python3 examples/sample_api.py --port 9100

Endpoints:
    GET    /config            all keys and values
    GET    /config/KEY        one value
    PUT    /config/KEY        set a value (the request body, JSON or text)
    DELETE /config/KEY        remove a key
    GET    /export/customers  customer records (names, emails, phones, cards): sensitive data
    GET    /echo              what the API received: method, path, query, headers (for tests)
    POST   /upload?chunk_delay_ms=D   reads the body as it streams (slowly if asked); answers its size and SHA-256
    GET    /download?bytes=N  N bytes, streamed in chunks
    GET    /events?count=N&interval_ms=M   server-sent events
    GET    /slow?seconds=S    answers after S seconds

Standard library only; loopback only unless --host says otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CUSTOMERS = [
    {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0018",
     "card": "4111 1111 1111 1111", "country": "GB"},
    {"id": 2, "name": "Grace Hopper", "email": "grace@example.com", "phone": "+1 202 555 0143",
     "card": "5500 0000 0000 0004", "country": "US"},
    {"id": 3, "name": "Alan Turing", "email": "alan@example.com", "phone": "+44 161 496 0959",
     "card": "3400 0000 0000 009", "country": "GB"},
]


class SampleAPI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sample-api/1"
    config: dict[str, object] = {"feature.search": True, "db.pool_size": 10, "banner": "hello"}
    lock = threading.Lock()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet unless asked
        if os.environ.get("SAMPLE_API_LOG"):
            super().log_message(format, *args)

    # --- helpers -------------------------------------------------------------------------------

    def _send_json(self, status: int, body: object, extra_headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body_chunks(self):
        """The request body as it arrives, Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                    yield chunk
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def _read_body(self, limit: int = 1 << 20) -> bytes:
        data = b""
        for chunk in self._body_chunks():
            data += chunk
            if len(data) > limit:
                raise ValueError("body too large")
        return data

    def _start_chunked(self, status: int, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _authorized(self) -> bool:
        expected = os.environ.get("SAMPLE_API_KEY", "")
        given = self.headers.get("X-Api-Key", "")
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self._send_json(401, {"error": "a valid X-Api-Key is required"})
        return False

    # --- routing -------------------------------------------------------------------------------

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        if not self._authorized():
            # Drain what the client sent so the connection stays usable.
            for _ in self._body_chunks():
                pass
            return
        method = self.command
        if parts == ["echo"]:
            body = self._read_body()
            self._send_json(200, {
                "method": method, "path": url.path, "query": url.query,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode(errors="replace"),
            })
        elif parts == ["config"] and method in ("GET", "HEAD"):
            with self.lock:
                self._send_json(200, dict(self.config))
        elif len(parts) == 2 and parts[0] == "config":
            key = parts[1]
            if method in ("GET", "HEAD"):
                with self.lock:
                    if key not in self.config:
                        return self._send_json(404, {"error": f"no key {key}"})
                    self._send_json(200, {"key": key, "value": self.config[key]})
            elif method == "PUT":
                raw = self._read_body()
                try:
                    value = json.loads(raw) if raw else None
                except ValueError:
                    value = raw.decode(errors="replace")
                with self.lock:
                    self.config[key] = value
                self._send_json(200, {"key": key, "value": value})
            elif method == "DELETE":
                with self.lock:
                    existed = self.config.pop(key, None) is not None
                self._send_json(200 if existed else 404, {"key": key, "deleted": existed})
            else:
                self._send_json(405, {"error": "method not allowed"})
        elif parts == ["export", "customers"]:
            self._send_json(200, {"customers": CUSTOMERS})
        elif parts == ["upload"] and method in ("POST", "PUT"):
            digest = hashlib.sha256()
            size = 0
            delay = int(query.get("chunk_delay_ms", ["0"])[0]) / 1000
            for chunk in self._body_chunks():
                digest.update(chunk)
                size += len(chunk)
                if delay:
                    time.sleep(delay)
            self._send_json(200, {"bytes": size, "sha256": digest.hexdigest()})
        elif parts == ["download"]:
            total = int(query.get("bytes", ["0"])[0])
            self._start_chunked(200, "application/octet-stream")
            block = bytes(range(256)) * 256  # 64 KiB
            sent = 0
            while sent < total:
                piece = block[: min(len(block), total - sent)]
                self._chunk(piece)
                sent += len(piece)
            self.wfile.write(b"0\r\n\r\n")
        elif parts == ["events"]:
            count = int(query.get("count", ["3"])[0])
            interval = int(query.get("interval_ms", ["100"])[0]) / 1000
            self._start_chunked(200, "text/event-stream")
            for index in range(count):
                self._chunk(f"id: {index}\nevent: tick\ndata: {json.dumps({'n': index, 't': time.time()})}\n\n".encode())
                time.sleep(interval)
            self.wfile.write(b"0\r\n\r\n")
        elif parts == ["slow"]:
            time.sleep(float(query.get("seconds", ["1"])[0]))
            self._send_json(200, {"slept": True})
        else:
            self._send_json(404, {"error": "not found"})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle()

    do_HEAD = do_GET
    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--certificate", help="serve https with this PEM certificate chain")
    parser.add_argument("--key", help="the certificate's PEM private key")
    args = parser.parse_args()
    if not os.environ.get("SAMPLE_API_KEY"):
        print("sample_api.py: set SAMPLE_API_KEY (the service key clients must send)", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((args.host, args.port), SampleAPI)
    server.daemon_threads = True
    scheme = "http"
    if args.certificate:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certificate, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    print(f"sample API listening on {scheme}://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
