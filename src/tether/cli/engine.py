"""`tether dev`: the embedded Temporal engine in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.core.devserver import EmbeddedEngine


def _home_hint(state_dir: Path) -> str:
    """How tether commands in other shells find this state directory."""
    from tether.core.store import default_home

    if state_dir.resolve() != default_home().resolve():
        return f"with TETHER_HOME={state_dir}"
    if os.environ.get("TETHER_HOME"):
        return f"with the same TETHER_HOME ({state_dir})"
    return f"with nothing to set (the default TETHER_HOME, {state_dir})"


async def cmd_dev(args: argparse.Namespace) -> int:
    from tether.core.devserver import (
        PREFERRED_PORT,
        PREFERRED_UI_PORT,
        EmbeddedEngine,
        preferred_port,
    )
    from tether.core.store import default_home

    # Default ports move to free ones when taken; ports given on the command line do not.
    fallback = args.port is None and args.ui_port is None
    port = args.port or (PREFERRED_PORT if fallback else preferred_port(PREFERRED_PORT))
    ui_port = args.ui_port or (PREFERRED_UI_PORT if fallback else preferred_port(PREFERRED_UI_PORT))
    state_dir = Path(args.state_dir) if args.state_dir is not None else default_home()
    codec = _codec_for_ui()
    engine = EmbeddedEngine(
        ui_codec_endpoint=codec.url if codec is not None else None,
        port=port,
        ui_port=ui_port,
        state_dir=state_dir,
        persist=not args.memory,
        register=True,
        fallback_ports=fallback,
    )
    try:
        await engine.start()
    except BaseException:
        if codec is not None:
            codec.shutdown()
        raise
    print(f"Temporal engine on {engine.address} (pid {engine.pid}, namespace {engine.namespace})")
    if engine.ui_url:
        print(f"Web UI:       {engine.ui_url}")
    if codec is not None and engine.ui_url:
        codec.origins = {engine.ui_url, engine.ui_url.replace("127.0.0.1", "localhost")}
        print(f"Codec server: {codec.url} (the Web UI decrypts payloads through it)")
    print(f"Runs kept in: {engine.db_path or 'memory only (--memory)'}")
    print(f"Engine file:  {engine.record_path}")
    print(
        f"Other shells: tether commands find this engine {_home_hint(state_dir)}; "
        f"other Temporal tools use TEMPORAL_ADDRESS={engine.address}"
    )
    print("Stop with Ctrl-C.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            if engine.process is not None and engine.process.poll() is not None:
                print(
                    f"tether: error: the engine exited with code {engine.process.returncode}, "
                    f"saying: {engine.last_log_line()!r}. Its log: {engine.log_path}",
                    file=sys.stderr,
                )
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        engine.stop()
        if codec is not None:
            codec.shutdown()
            codec.server_close()
    return 0


def _codec_for_ui() -> Any:
    """With encryption on, a codec server on loopback for the engine's Web UI (started)."""
    from tether.core.codec import Keyring
    from tether.core.codec_server import CodecServer
    from tether.core.devserver import free_port

    keyring = Keyring.from_env()
    if keyring is None:
        return None
    server = CodecServer(keyring, port=free_port(), origins=())
    server.start_background()
    return server


def announce_owned_engine(engine: EmbeddedEngine) -> None:
    """Tell the user that this command started an engine of its own (stderr, one line)."""
    ui = f", Web UI {engine.ui_url}" if engine.ui_url else ""
    print(
        f"tether: no engine ran for {engine.state_dir}, so this command started one: "
        f"{engine.address} (pid {engine.pid}){ui}, described in {engine.record_path}. "
        "It stops when this command exits; keep one running with `tether dev`.",
        file=sys.stderr,
        flush=True,
    )


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    p = sub.add_parser("dev", help="run the embedded Temporal engine in the foreground")
    p.add_argument("--port", type=int, default=None, help="gRPC port (default: 7233, if free)")
    p.add_argument("--ui-port", type=int, default=None, help="Web UI port (default: 8233, if free)")
    p.add_argument("--state-dir", type=Path, default=None, help="default: $TETHER_HOME")
    p.add_argument("--memory", action="store_true", help="keep runs in memory only")
    p.set_defaults(func=cmd_dev, is_async=True)
