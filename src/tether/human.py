"""Asking a person from inside an agent: one tool that works in every adapter.

Add :func:`ask_human` (or one made by :func:`human_input`) to an agent's tools like any
function tool (``function_tool(tether.ask_human)`` in the OpenAI Agents SDK,
``Agent(tools=[tether.ask_human])`` in Pydantic AI). The adapters recognize it by its
marker and, instead of running it as a step, suspend the run durably until someone answers
(``handle.answer(id, value)`` or ``tether approve RUN ID --answer TEXT``): the worker holds
no memory meanwhile, and the answer becomes the tool's result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tether.core.contract import JSON, TimeoutPolicy
from tether.errors import ConfigurationError

MARKER = "__tether_wait__"


@dataclass(frozen=True)
class HumanInput:
    """How a human-input tool waits: its timeout (seconds) and what happens then."""

    timeout: float | None = None
    on_timeout: TimeoutPolicy | None = None
    default: JSON = None


async def ask_human(question: str) -> str:
    """Ask a person a question and wait for their answer (which is returned as text)."""
    raise ConfigurationError(
        "ask_human only works inside a durable run, where the adapter turns it into a wait. "
        "Fix: run the agent through tether.durable(agent).run(...)"
    )


setattr(ask_human, MARKER, HumanInput())


def human_input(
    name: str = "ask_human",
    *,
    description: str | None = None,
    timeout: float | None = None,
    on_timeout: TimeoutPolicy | None = None,
    default: JSON = None,
) -> Callable[[str], Awaitable[str]]:
    """A human-input tool of your own name, description and timeout policy."""

    async def tool(question: str) -> str:
        return await ask_human(question)

    tool.__name__ = tool.__qualname__ = name
    tool.__doc__ = description or ask_human.__doc__
    setattr(tool, MARKER, HumanInput(timeout=timeout, on_timeout=on_timeout, default=default))
    return tool


def human_input_of(func: Any) -> HumanInput | None:
    """The wait settings of a human-input tool function, or None for any other function."""
    spec = getattr(func, MARKER, None)
    return spec if isinstance(spec, HumanInput) else None
