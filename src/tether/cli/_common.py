"""What every command group shares: loading MODULE:OBJECT, connecting, printing tables."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

from tether.errors import TetherError


def load_object(spec: str) -> object:
    """Import ``module:attribute`` (dots in the attribute walk into it)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TetherError(
            f"{spec!r} is not of the form MODULE:OBJECT (e.g. myapp.agents:weather_agent)"
        )
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TetherError(
            f"cannot import module {module_name!r}: {exc}. Fix: run tether from the directory "
            "that holds it, or add that directory to PYTHONPATH"
        ) from exc
    except SyntaxError as exc:
        raise TetherError(
            f"module {module_name!r} has a syntax error ({exc.filename}, line {exc.lineno}: "
            f"{exc.msg}). Fix: correct it; `python -c 'import {module_name}'` shows it"
        ) from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise TetherError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {first} (in its own "
            f"code, not tether's). Fix: `python -c 'import {module_name}'` shows the traceback"
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise TetherError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def as_durable(spec: str, **kwargs: Any) -> Any:
    """The agent ``MODULE:OBJECT`` names, wrapped (or as wrapped there), knowing its spec."""
    from tether.core.handle import DurableAgent, durable

    obj = load_object(spec)
    if isinstance(obj, DurableAgent):
        obj._source = obj._source or spec
        return obj
    return durable(obj, source=spec, **kwargs)


async def runtime_from(args: argparse.Namespace) -> Any:
    """The runtime the command's connection options name (embedded engine when none)."""
    from tether.cli.engine import announce_owned_engine
    from tether.core.runtime import Runtime

    runtime = await Runtime.start(
        address=args.address, namespace=args.namespace, task_queue=args.task_queue
    )
    if runtime.engine is not None:
        announce_owned_engine(runtime.engine)
    return runtime


def add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Temporal host:port (default: env config, else embedded)")
    p.add_argument("--namespace", help="Temporal namespace (default: env config or 'default')")
    p.add_argument("--task-queue", help="task queue (default: $TETHER_TASK_QUEUE or 'tether')")


def add_logging(p: argparse.ArgumentParser, default: str) -> None:
    """``--log-level`` / ``--log-format``: the process's log lines, on standard error."""
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help=f"Tether's log lines from this level on, on stderr (default: {default}); debug "
        "adds Temporal's own warnings",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines as text (key=value fields) or one JSON object each (default: text)",
    )


def jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def ago(when: datetime | None) -> str:
    """``3 min ago`` (or ``-``)."""
    if when is None:
        return "-"
    secs = (datetime.now(UTC) - when).total_seconds()
    if secs < 90:
        return f"{secs:.0f} s ago"
    if secs < 90 * 60:
        return f"{secs / 60:.0f} min ago"
    if secs < 36 * 3600:
        return f"{secs / 3600:.0f} h ago"
    return f"{secs / 86400:.0f} days ago"


async def follow_events(
    handle: Any, *, after: int | None = None, out: IO[str] | None = None
) -> int | None:
    """Print the run's events live until its last one (``tether run --follow``,
    ``tether runs follow``). Returns the offset of the last event printed (or ``after``)."""
    out = out or sys.stderr
    streaming = False
    last = after
    async for event in handle.events(after=after):
        last = event.offset
        if event.type == "model.delta":
            if not streaming:
                print(f"  {event.time[11:23]} #{event.offset} model text: ", end="", file=out)
                streaming = True
            print(event.data.get("text", ""), end="", file=out, flush=True)
            continue
        if streaming:
            print(file=out)
            streaming = False
        print(f"  {event.time[11:23]} {event.describe()}", file=out, flush=True)
        if event.type in ("approval.requested", "question.asked"):
            verb = "--answer TEXT" if event.type == "question.asked" else "[--deny --reason R]"
            print(
                f"    -> tether approve {handle.id} {event.data['id']} {verb}",
                file=out,
                flush=True,
            )
    if streaming:
        print(file=out)
    return last


# -- argument types: each raises argparse.ArgumentTypeError with the cause and the fix ----


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number. Fix: give a positive integer, e.g. 4000"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"{value} is not positive. Fix: give a positive integer, e.g. 4000"
        )
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number. Fix: give 0 or a positive integer"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{value} is negative. Fix: give 0 (the first entry) or a positive integer"
        )
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number. Fix: give a positive number, e.g. 30"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text} is not a positive number. Fix: give a number above 0, e.g. 30"
        )
    return value


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (``--context``)."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg} at column {exc.colno}). Fix: pass a JSON object in "
            """single quotes, e.g. --context '{"user": "ada"}'"""
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"a JSON {type(value).__name__}, not an object. Fix: pass an object, e.g. "
            """--context '{"user": "ada"}'"""
        )
    return value


def utf8_text(text: str, what: str) -> str:
    """``text`` from the command line, refused when it holds bytes that are not UTF-8
    (Python keeps those as lone surrogates, which no JSON payload can carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start].encode("utf-8", "surrogateescape")
        raise TetherError(
            f"{what} is not valid UTF-8 (byte 0x{bad.hex()} at character {exc.start}). Fix: "
            "convert it to UTF-8 (e.g. `iconv -t UTF-8`), or pass it with --prompt-file"
        ) from None
    return text


def read_prompt(prompt: str | None, prompt_file: str | None) -> str:
    """The prompt: the argument, ``-`` for standard input, or ``--prompt-file`` (any size:
    a command line holds about 128 KB)."""
    if prompt is not None and prompt_file is not None:
        raise TetherError(
            "give the prompt once: as an argument or with --prompt-file, not both. Fix: drop "
            "one of them"
        )
    if prompt_file is not None:
        source = "standard input" if prompt_file == "-" else f"--prompt-file {prompt_file}"
        try:
            data = sys.stdin.buffer.read() if prompt_file == "-" else _read(prompt_file)
        except OSError as exc:
            raise TetherError(
                f"cannot read {source}: {exc.strerror or exc}. Fix: check the path"
            ) from None
    elif prompt == "-":
        source, data = "standard input", sys.stdin.buffer.read()
    elif prompt is None:
        raise TetherError(
            'no prompt. Fix: tether run MODULE:OBJECT "prompt" (or - to read standard input, '
            "or --prompt-file PATH)"
        )
    else:
        return utf8_text(prompt, "the prompt")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TetherError(
            f"the prompt from {source} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}). Fix: convert it to UTF-8 (e.g. `iconv -t UTF-8`)"
        ) from None


def _read(path: str) -> bytes:
    from pathlib import Path

    return Path(path).read_bytes()
