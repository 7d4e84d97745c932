"""`tether`: run the engine, host agents, start and operate runs, list plugins, the demo.

Each command group lives in a module of its own (``engine``, ``hosting``, ``runs``,
``deploy``, ``adapters``) with a ``register(sub)`` that adds its parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from tether.cli import adapters, codec, deploy, engine, hosting, runs
from tether.cli._common import load_object
from tether.errors import TetherError

__all__ = ["build_parser", "load_object", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with bad arguments reported on one line (cause, fix, where to read more)
    and exit status 2, instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tether", description="Durable execution for AI agents, on Temporal.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (engine, hosting, runs, deploy, adapters, codec):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "log_level", None) is not None:
        from tether.core.logs import configure

        configure(args.log_level, args.log_format)
    try:
        code = int(asyncio.run(args.func(args))) if args.is_async else int(args.func(args))
        sys.stdout.flush()  # here, so a reader gone early is handled below, not at exit
        return code
    except TetherError as exc:
        print(f"tether: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`tether runs list | head`): not an error of
        # ours. Point stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process killed by it
    except Exception as exc:
        # One line naming cause and fix; the traceback only when asked for.
        if os.environ.get("TETHER_DEBUG"):
            traceback.print_exc()
        print(f"tether: error: {explain(exc, args)}", file=sys.stderr)
        return 2
    finally:
        # An error's traceback cycle can hold the engine client until interpreter shutdown,
        # where dropping it aborts the process; drop it now.
        gc.collect()


def explain(exc: BaseException, args: Any) -> str:
    """One line for an error no command turned into a TetherError."""
    from temporalio.service import RPCError, RPCStatusCode

    run = getattr(args, "run_id", None)
    namespace = getattr(args, "namespace", None) or os.environ.get("TEMPORAL_NAMESPACE")
    where = f" in namespace {namespace!r}" if namespace else ""
    if isinstance(exc, RPCError):
        text = exc.message.splitlines()[0] if exc.message else exc.status.name
        if exc.status == RPCStatusCode.NOT_FOUND and run:
            return f"no run {run!r}{where} ({text}). Fix: `tether runs list`"
        if exc.status == RPCStatusCode.NOT_FOUND:
            return f"not found{where}: {text}. Fix: check the id (`tether runs list`)"
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return (
                f"the Temporal server did not answer ({exc.status.name}: {text}). Fix: check "
                "that it runs (`tether dev`) and TEMPORAL_ADDRESS / --address"
            )
        if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED):
            return (
                f"the Temporal server refused the request ({exc.status.name}: {text}). Fix: "
                "check TEMPORAL_API_KEY / TLS settings and the namespace"
            )
        return (
            f"the Temporal server refused the request ({exc.status.name}: {text}). "
            "Set TETHER_DEBUG=1 for the traceback"
        )
    first = str(exc).splitlines()[0] if str(exc) else ""
    if "binary/encrypted" in first:
        return (
            "the run's data is encrypted, and this process has no encryption key. Fix: set "
            "TETHER_ENCRYPTION_KEY (or TETHER_ENCRYPTION_KEY_FILE) as the workers have it "
            "(docs/security.md)"
        )
    return (
        f"unexpected {type(exc).__name__}: {first}. This is likely a bug in tether; "
        "set TETHER_DEBUG=1 for the traceback"
    )
