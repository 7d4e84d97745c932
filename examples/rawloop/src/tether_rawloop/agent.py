"""The agent and its loop, with no framework and no Tether in it.

``agent_loop`` is written against two callables, one that asks the model and one that runs
a tool: called directly they make the plain agent; made steps, the durable one.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
AskModel = Callable[[list[Message]], Awaitable[Message]]
RunTool = Callable[[str, str], Awaitable[str]]


@dataclass(frozen=True)
class Tool:
    """A tool: a sync or async function taking keyword arguments that returns text."""

    name: str
    description: str
    func: Callable[..., Any]
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {
            "type": "object",
            "properties": {"arg": {"type": "string"}},
            "required": ["arg"],
        }
    )

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }

    async def __call__(self, arguments: str) -> str:
        kwargs = json.loads(arguments or "{}")
        if inspect.iscoroutinefunction(self.func):
            return str(await self.func(**kwargs))
        return str(await asyncio.to_thread(self.func, **kwargs))


@dataclass(frozen=True)
class RawAgent:
    """An agent: a model at an OpenAI-compatible endpoint, instructions and tools."""

    name: str
    model: str
    base_url: str
    instructions: str = "You are a helpful agent."
    tools: tuple[Tool, ...] = ()
    structured: bool = False
    """The final answer is JSON (parsed into a dict)."""
    api_key: str = "not-needed"

    def tool(self, name: str) -> Tool:
        for t in self.tools:
            if t.name == name:
                return t
        raise KeyError(f"agent {self.name!r} has no tool {name!r}")


@dataclass(frozen=True)
class RawResult:
    output: Any
    turns: int


class MaxTurnsExceeded(Exception):
    """The model kept asking for tools past the turn limit."""


class ModelHTTPError(Exception):
    def __init__(self, status: int, body: str, retry_after: float | None) -> None:
        super().__init__(f"model endpoint answered {status}: {body[:300]}")
        self.status = status
        self.retry_after = retry_after


Checkpoint = Callable[[list[Message], int], Awaitable[None]]
"""Called before each model call with the conversation and the turns made so far."""


async def agent_loop(
    agent: RawAgent,
    prompt: str,
    ask_model: AskModel,
    run_tool: RunTool,
    max_turns: int = 10,
    *,
    resume: tuple[list[Message], int] | None = None,
    checkpoint: Checkpoint | None = None,
) -> RawResult:
    """The loop: ask the model; run the tools it asks for (concurrently); repeat.

    ``resume`` (the conversation and turns a ``checkpoint`` saw) continues a loop that
    stopped at a checkpoint, exactly where it stopped."""
    messages: list[Message] = [
        {"role": "system", "content": agent.instructions},
        {"role": "user", "content": prompt},
    ]
    turns = 0
    if resume is not None:
        messages, turns = list(resume[0]), resume[1]
    while True:
        if turns >= max_turns:
            raise MaxTurnsExceeded(f"agent {agent.name!r} exceeded {max_turns} turns")
        if checkpoint is not None:
            await checkpoint(messages, turns)
        turns += 1
        reply = await ask_model(messages)
        messages.append(reply)
        calls = reply.get("tool_calls") or []
        if not calls:
            text = reply.get("content") or ""
            return RawResult(json.loads(text) if agent.structured else text, turns)
        results = await asyncio.gather(
            *(run_tool(c["function"]["name"], c["function"]["arguments"]) for c in calls)
        )
        for call, result in zip(calls, results, strict=True):
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})


def chat_request(agent: RawAgent, messages: list[Message]) -> dict[str, Any]:
    """POST /chat/completions; returns the whole response (raises ModelHTTPError)."""
    body: dict[str, Any] = {"model": agent.model, "messages": messages}
    if agent.tools:
        body["tools"] = [t.schema() for t in agent.tools]
    request = urllib.request.Request(
        agent.base_url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {agent.api_key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        header = exc.headers.get("retry-after") if exc.headers else None
        raise ModelHTTPError(
            exc.code, exc.read().decode(errors="replace"), float(header) if header else None
        ) from None


async def run_plain(agent: RawAgent, prompt: str, *, max_turns: int = 10) -> RawResult:
    """The agent without Tether: the loop with direct model and tool calls."""

    async def ask_model(messages: list[Message]) -> Message:
        response = await asyncio.to_thread(chat_request, agent, messages)
        return dict(response["choices"][0]["message"])

    async def run_tool(name: str, arguments: str) -> str:
        return await agent.tool(name)(arguments)

    return await agent_loop(agent, prompt, ask_model, run_tool, max_turns)
