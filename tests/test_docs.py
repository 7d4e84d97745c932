"""The documentation's code blocks run: each page's python blocks, in one process per page,
against the scripted model server and the test engine (tests/docs_blocks.py says how a
block is marked as not run, and why)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from docs_blocks import Block, MarkerError, blocks, commands, runnable
from tether.core.devserver import EmbeddedEngine
from tether.core.store import BlobStore
from tether.testing import Script, ScriptedModelServer, ToolCall, Turn

HERE = Path(__file__).parent
DOCS = HERE.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))

ANSWER = Turn.text("No alerts right now.")
SCRIPTS: dict[str, list[Turn]] = {
    # What the model answers on each page (every run of a page starts at turn 0).
    "getting-started.md": [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("California has a heat advisory."),
    ],
    "openai-agents.md": [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("California has a heat advisory."),
    ],
    "human-in-the-loop.md": [
        Turn.tool_calls(ToolCall("refund", {"order_id": 42})),
        Turn.text("Order 42 is refunded."),
    ],
}
NO_RUNS = {"deploying.md"}  # its block builds a versioned worker and starts no run


def test_every_python_block_runs_or_says_why_not() -> None:
    """A python block either runs or carries a visible ``docs-test: skip: WHY`` marker (a
    marker without its reason, or marking nothing, fails the parse: MarkerError)."""
    python = [b for page in PAGES for b in blocks(page) if b.lang == "python"]
    assert len(python) >= 20, f"only {len(python)} python blocks found in docs/"
    # The pages a new user reads first run everything they show.
    for name in ("getting-started.md", "concepts.md", "openai-agents.md", "pydantic-ai.md"):
        page = DOCS / name
        shown = [b for b in blocks(page) if b.lang == "python"]
        assert shown and len(runnable(page)) == len(shown), f"{name}: every block should run"


def test_a_marker_must_mark_a_python_block(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("<!-- docs-test: skip: why -->\n\ntext\n```python\nx = 1\n```\n")
    with pytest.raises(MarkerError, match="right before"):
        blocks(page)
    page.write_text("<!-- docs-test: skip -->\n```python\nx = 1\n```\n")
    with pytest.raises(MarkerError, match="with the reason"):
        blocks(page)
    page.write_text("<!-- docs-test: skip: a fragment -->\n```python\nx(\n```\n```python\ny\n```\n")
    found = blocks(page)
    assert [b.skip for b in found] == ["a fragment", None]
    assert [b.line for b in found] == [3, 6]


def test_tether_commands_in_shell_blocks_parse(capsys: pytest.CaptureFixture[str]) -> None:
    """Every `tether ...` line of a bash block names a real command with real options."""
    from tether.cli import build_parser

    checked = 0
    for page in PAGES:
        for block in blocks(page):
            if block.lang not in ("bash", "console") or block.skip is not None:
                continue
            for argv in commands(block):
                try:
                    build_parser().parse_args(argv)
                except SystemExit:
                    pytest.fail(
                        f"{block.where}: tether {' '.join(argv)}\n{capsys.readouterr().err}"
                    )
                checked += 1
    assert checked >= 10, f"only {checked} tether commands found in the docs' bash blocks"


def test_commands_are_read_like_a_shell() -> None:
    block = Block(
        Path("p.md"),
        1,
        "bash",
        "export A=1\n"
        "tether dev   # the engine\n"
        "X=1 .venv/bin/tether run m:a 'a prompt' \\\n  --id r1 && tether runs show r1\n"
        "python -m tether.cli; echo tether\n",
        None,
    )
    assert commands(block) == [
        ["dev"],
        ["run", "m:a", "a prompt", "--id", "r1"],
        ["runs", "show", "r1"],
    ]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda p: p.name.removesuffix(".md")
)
def test_page_blocks_run(
    page: Path, engine: EmbeddedEngine, store: BlobStore, tmp_path: Path
) -> None:
    script = Script(SCRIPTS.get(page.name, [ANSWER]))
    with ScriptedModelServer(script) as server:
        env = dict(os.environ)
        env.update(
            {
                "TEMPORAL_ADDRESS": engine.address,
                "TETHER_STORE": store.url,
                "TETHER_HOME": str(tmp_path / "home"),
                "TETHER_TASK_QUEUE": f"docs-{uuid.uuid4().hex[:8]}",
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": "test-key-not-used",
                "OPENAI_AGENTS_DISABLE_TRACING": "1",
                # Blocks import the examples as a checkout's user would (`examples.x`).
                "PYTHONPATH": os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]),
            }
        )
        done = subprocess.run(
            [sys.executable, str(HERE / "docs_blocks.py"), str(page)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert done.returncode == 0, f"{page.name}:\n{done.stdout}\n{done.stderr}"
        if page.name not in NO_RUNS:
            # The blocks reached the model through the scripted server (not a provider).
            assert server.count() > 0, f"{page.name}: no model request was made"
