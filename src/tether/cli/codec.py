"""`tether codec-server` (decode encrypted payloads for the Temporal UI and CLI) and
`tether keygen` (a new encryption key). See docs/security.md."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

TOKEN_ENV = "TETHER_CODEC_TOKEN"


def cmd_keygen(args: argparse.Namespace) -> int:
    from tether.core.codec import Keyring

    print(Keyring.generate(args.id).export())
    return 0


def cmd_codec_server(args: argparse.Namespace) -> int:
    from tether.core.codec import KEY_ENV, KEY_FILE_ENV, Keyring
    from tether.core.codec_server import DEFAULT_ORIGINS, CodecServer
    from tether.errors import ConfigurationError

    keyring = Keyring.from_env()
    if keyring is None:
        raise ConfigurationError(
            f"the codec server needs the encryption keys, and neither {KEY_ENV} nor "
            f"{KEY_FILE_ENV} is set. Fix: set one as the workers have it (docs/security.md)"
        )
    origins = args.origin or list(DEFAULT_ORIGINS)
    token = os.environ.get(TOKEN_ENV) or None
    try:
        server = CodecServer(keyring, host=args.host, port=args.port, origins=origins, token=token)
    except OSError as exc:
        raise ConfigurationError(
            f"the codec server cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}. Fix: choose another --port"
        ) from None
    print(f"Codec server on {server.url} (keys {', '.join(keyring.ids)})")
    print(f"Temporal UI:  set its codec endpoint to {server.url} (origins: {', '.join(origins)})")
    print(f"Temporal CLI: temporal workflow show -w RUN_ID --codec-endpoint {server.url}")
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"tether: warning: {args.host} is not loopback and no {TOKEN_ENV} is set: anyone "
            "who reaches this port can decrypt payloads they hold",
            file=sys.stderr,
        )
    print("Stop with Ctrl-C.", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    p = sub.add_parser(
        "codec-server",
        help="decrypt payloads for the Temporal UI / CLI (needs TETHER_ENCRYPTION_KEY)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8888, help="port (default 8888)")
    p.add_argument(
        "--origin",
        action="append",
        default=None,
        help="a web origin (the Temporal UI's, e.g. http://localhost:8233) allowed to call it; "
        f"repeatable; '*' allows any. Requests must carry 'Bearer ${TOKEN_ENV}' when it is set",
    )
    p.set_defaults(func=cmd_codec_server, is_async=False)
    p = sub.add_parser("keygen", help="print a new encryption key (ID:BASE64KEY)")
    p.add_argument("--id", default=None, help="the key's id (default: a random one)")
    p.set_defaults(func=cmd_keygen, is_async=False)
