"""Temporal's remote codec endpoint over Tether's keyring, for the Temporal UI and CLI.

Temporal never sees a key: the UI (and ``temporal workflow show --codec-endpoint``) posts
the encrypted payloads it shows to ``<endpoint>/decode`` and displays what comes back. The
body of ``/encode`` and ``/decode`` is the protobuf JSON of ``temporal.api.common.v1.Payloads``
(``{"payloads": [{"metadata": {...}, "data": "base64"}]}``) and so is the answer.

Anyone who can reach the endpoint can decrypt what they hold, so it listens on loopback by
default, answers cross-origin requests only from the origins it is given (the Temporal UI's),
and can require a bearer token. Built on the standard library's HTTP server (one request at
a time per thread): an operator's browser is its only client.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from tether.core.codec import EncryptionCodec, Keyring
from tether.errors import DecryptionError

MAX_BODY = 32 * 1024 * 1024
"""Largest request body accepted (history payloads are at most a few MB)."""

DEFAULT_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
"""The Temporal UI of a dev server on its default port."""

ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"


class CodecServer(ThreadingHTTPServer):
    """Serves ``POST /encode`` and ``POST /decode`` with :class:`EncryptionCodec`.

    ``origins``: the origins (``scheme://host:port``) whose pages may call it (CORS); ``"*"``
    allows any. ``token``: when set, requests must carry ``Authorization: Bearer <token>``.
    """

    daemon_threads = True

    def __init__(
        self,
        keyring: Keyring,
        *,
        host: str = "127.0.0.1",
        port: int = 8888,
        origins: Sequence[str] = DEFAULT_ORIGINS,
        token: str | None = None,
    ) -> None:
        # What predates encryption is shown as it is (the server only displays).
        self.codec = EncryptionCodec(dataclasses.replace(keyring, accept_plaintext=True))
        self.origins = {o.rstrip("/") for o in origins}
        self.token = token
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    def start_background(self) -> threading.Thread:
        """Serve from a daemon thread (stop with :meth:`shutdown`)."""
        thread = threading.Thread(target=self.serve_forever, name="tether-codec", daemon=True)
        thread.start()
        return thread

    def transform(self, path: str, body: bytes) -> bytes:
        """The answer to a ``/encode`` or ``/decode`` body (raises ValueError when bad)."""
        payloads = Payloads()
        json_format.Parse(body or b"{}", payloads, ignore_unknown_fields=True)
        step = self.codec.encode_one if path == "/encode" else self.codec.decode_one
        out = Payloads(payloads=[step(p) for p in payloads.payloads])
        return json_format.MessageToJson(out, indent=None).encode()


class _Handler(BaseHTTPRequestHandler):
    server: CodecServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # payloads never reach a log; errors are answered, not printed

    def _cors(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:
            return
        if "*" in self.server.origins:
            self.send_header("Access-Control-Allow-Origin", "*")
        elif origin.rstrip("/") in self.server.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")
        else:
            return
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        self.send_header("Access-Control-Max-Age", "600")

    def _reply(self, status: HTTPStatus, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._reply(status, json.dumps({"error": message}).encode())

    def do_OPTIONS(self) -> None:
        origin = self.headers.get("Origin")
        allowed = origin is not None and (
            "*" in self.server.origins or origin.rstrip("/") in self.server.origins
        )
        self.send_response(HTTPStatus.NO_CONTENT if allowed else HTTPStatus.FORBIDDEN)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path.split("?")[0] in ("/", "/health"):
            self._reply(HTTPStatus.OK, b'{"ok":true}')
        else:
            self._error(HTTPStatus.NOT_FOUND, "POST /encode or /decode")

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if not (path.endswith("/encode") or path.endswith("/decode")):
            self._error(HTTPStatus.NOT_FOUND, "POST /encode or /decode")
            return
        origin = self.headers.get("Origin")
        if (
            origin is not None
            and "*" not in self.server.origins
            and origin.rstrip("/") not in self.server.origins
        ):
            self._error(HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed")
            return
        if self.server.token is not None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.server.token}".encode()):
                self._error(HTTPStatus.UNAUTHORIZED, "a bearer token is required")
                return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
            return
        body = self.rfile.read(length)
        try:
            answer = self.server.transform(
                "/encode" if path.endswith("/encode") else "/decode", body
            )
        except DecryptionError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        except (json_format.ParseError, ValueError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not Payloads JSON: {exc}")
            return
        self._reply(HTTPStatus.OK, answer)
