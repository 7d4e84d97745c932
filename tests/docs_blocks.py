"""The code blocks of the documentation: found in docs/*.md, and run page by page.

Every fenced ``python`` block of a page runs, in order, in one namespace (like a session in
``python -m asyncio``: top-level ``await`` works, names carry over to later blocks), and
every ``tether`` command in a ``bash`` block (or on a ``$`` line of a ``console`` block)
must parse with the CLI's own parser. A block
that cannot run on its own (a signature, a fragment, a program that needs a real API key)
says so in the Markdown source, on the line right before its fence::

    <!-- docs-test: skip: a fragment (payments stands for your payment service) -->

``python tests/docs_blocks.py docs/PAGE.md`` runs a page's blocks; tests/test_docs.py does
that against the scripted model server and the test engine.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>[\w-]+)\s*:?\s*(?P<why>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, first line (1-based) and source."""

    page: Path
    line: int
    lang: str
    source: str
    skip: str | None
    """Why the block does not run (from its ``docs-test: skip`` marker); None: it runs."""

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


class MarkerError(ValueError):
    """A ``docs-test`` marker that is malformed or marks no python block."""


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, with their skip markers checked."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a marker awaiting its fence
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            if marker["what"] != "skip" or not marker["why"]:
                raise MarkerError(
                    f"{page.name}:{i + 1}: a docs-test marker reads "
                    "'<!-- docs-test: skip: WHY -->' (with the reason)"
                )
            pending = (i + 1, marker["why"])
        elif fence:
            indent, lang = fence["indent"], fence["lang"]
            fence_line = i + 1  # 1-based
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
                i += 1
            skip = pending[1] if pending is not None else None
            if pending is not None and pending[0] != fence_line - 1:
                raise MarkerError(
                    f"{page.name}:{pending[0]}: a docs-test marker must be on the line right "
                    "before a ``` fence"
                )
            found.append(Block(page, fence_line + 1, lang, "\n".join(body) + "\n", skip))
            pending = None
        elif pending is not None and lines[i].strip():
            raise MarkerError(
                f"{page.name}:{pending[0]}: a docs-test marker must be on the line right "
                "before a ``` fence"
            )
        i += 1
    if pending is not None:
        raise MarkerError(f"{page.name}:{pending[0]}: a docs-test marker marks no block")
    return found


def commands(block: Block) -> list[list[str]]:
    """The ``tether`` command lines of a shell block, as argument lists (without ``tether``).

    Continuation lines are joined, comments dropped, and commands split at ``&&``, ``||``,
    ``;`` and ``|``; leading ``VAR=value`` assignments and a ``.venv/bin/`` path are ignored.
    """
    text = block.source.replace("\\\n", " ")
    lines = text.splitlines()
    if block.lang == "console":  # a transcript: only the prompt lines are commands
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    found: list[list[str]] = []
    for line in lines:
        lexer = shlex.shlex(line.removeprefix("$ "), posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                while command and "=" in command[0] and not command[0].startswith("-"):
                    command.pop(0)
                if command and command[0].rsplit("/", 1)[-1] == "tether":
                    found.append(command[1:])
                command = []
            else:
                command.append(token)
    return found


def runnable(page: Path) -> list[Block]:
    """The python blocks of ``page`` that run."""
    return [b for b in blocks(page) if b.lang == "python" and b.skip is None]


async def run_blocks(todo: list[Block]) -> None:
    """Run ``todo`` in order in one namespace, awaiting top-level ``await``s."""
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in todo:
        # Line numbers in tracebacks are the Markdown file's.
        source = "\n" * (block.line - 1) + block.source
        code = compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        started = time.perf_counter()
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result
        print(f"--- {block.where}: {time.perf_counter() - started:.1f} s", flush=True)
    from tether.core import runtime

    if runtime._default is not None:  # the runtime the blocks used: its local workers stop
        await runtime._default.close()


def main(argv: list[str]) -> int:
    for name in argv:
        asyncio.run(run_blocks(runnable(Path(name))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
