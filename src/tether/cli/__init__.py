"""`tether`: run the engine, host agents, start and operate runs, list plugins, the demo.

Each command group lives in a module of its own (``engine``, ``hosting``, ``runs``,
``adapters``) with a ``register(sub)`` that adds its parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence

from tether.cli import adapters, engine, hosting, runs
from tether.cli._common import load_object
from tether.errors import TetherError

__all__ = ["build_parser", "load_object", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether", description="Durable execution for AI agents, on Temporal."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (engine, hosting, runs, adapters):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.is_async:
            return int(asyncio.run(args.func(args)))
        return int(args.func(args))
    except TetherError as exc:
        print(f"tether: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        # An error's traceback cycle can hold the engine client until interpreter shutdown,
        # where dropping it aborts the process; drop it now.
        gc.collect()
