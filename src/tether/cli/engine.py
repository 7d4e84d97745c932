"""`tether dev`: the embedded Temporal engine in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any


async def cmd_dev(args: argparse.Namespace) -> int:
    from tether.core.devserver import EmbeddedEngine

    engine = EmbeddedEngine(
        port=args.port, ui_port=args.ui_port, state_dir=args.state_dir, persist=not args.memory
    )
    await engine.start()
    print(f"Temporal engine on {engine.address} (namespace {engine.namespace})")
    if engine.ui_url:
        print(f"Web UI: {engine.ui_url}")
    print(f"State: {engine.db_path or 'in memory'}   Stop with Ctrl-C.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            if engine.process is not None and engine.process.poll() is not None:
                print(f"engine exited:\n{engine.log_tail()}", file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        engine.stop()
    return 0


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    p = sub.add_parser("dev", help="run the embedded Temporal engine in the foreground")
    p.add_argument("--port", type=int, default=7233)
    p.add_argument("--ui-port", type=int, default=8233)
    p.add_argument("--state-dir", type=Path, default=None, help="default: $TETHER_HOME")
    p.add_argument("--memory", action="store_true", help="keep runs in memory only")
    p.set_defaults(func=cmd_dev, is_async=True)
