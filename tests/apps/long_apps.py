"""Agents for long runs that continue as new (tests/test_continue_as_new.py): one tool,
``lookup``, called once per turn; executions are recorded in TETHER_TEST_CALLS."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from agents import Agent as OpenAIAgent
from agents import function_tool
from pydantic_ai import Agent as PydanticAgent

from apps.openai_apps import record

_registered: list[object] = []


def _lookup(key: str) -> str:
    record("lookup", key)
    time.sleep(float(os.environ.get("TETHER_TEST_TOOL_DELAY", "0")))
    return f"value of {key}"


@function_tool(name_override="lookup")
def lookup(key: str) -> str:
    """Look a key up."""
    return _lookup(key)


def pydantic_agent(model: Any = "openai:gpt-long") -> PydanticAgent[None, str]:
    agent = PydanticAgent(model, name="long-pydantic")

    @agent.tool_plain(name="lookup")
    def pydantic_lookup(key: str) -> str:
        """Look a key up."""
        return _lookup(key)

    return agent


openai_long = OpenAIAgent(
    name="long-openai", instructions="Look keys up.", tools=[lookup], model="gpt-long"
)
pydantic_long = pydantic_agent()


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rawloop" / "src"


def rawloop_agent() -> object:
    """The example adapter's agent; its plugin is registered in this process (the example
    is not installed in the test environment)."""
    if str(EXAMPLE) not in sys.path:
        sys.path.append(str(EXAMPLE))
    import tether_rawloop

    from tether.plugins import register_plugin

    if tether_rawloop not in _registered:
        register_plugin(tether_rawloop)
        _registered.append(tether_rawloop)
    from tether_rawloop import RawAgent, Tool

    return RawAgent(
        name="long-rawloop",
        model="gpt-long",
        base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        instructions="Look keys up.",
        tools=(
            Tool(
                "lookup",
                "Look a key up.",
                _lookup,
                {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
            ),
        ),
    )


_rawloop: list[object] = []


def __getattr__(name: str) -> object:
    # `tether worker apps.long_apps:rawloop_long` builds it on first use (once).
    if name == "rawloop_long":
        if not _rawloop:
            _rawloop.append(rawloop_agent())
        return _rawloop[0]
    raise AttributeError(name)
