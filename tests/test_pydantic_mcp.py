"""MCP toolsets in durable Pydantic AI runs: a real stdio MCP server (tests/apps/mcp_server.py),
Pydantic AI's real OpenAI model against the scripted model server, a real dev server."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio.worker import Worker

import tether
from replay import replays_cleanly
from tether.adapters._connections import POOL
from tether.adapters.pydantic_ai._mcp import MCP_CALL_STEP, MCP_LIST_STEP
from tether.core.contract import Capability
from tether.core.runtime import Runtime
from tether.errors import ConfigurationError
from tether.plugins import adapter_named
from tether.testing import ScriptedModelServer, ToolCall, Turn
from tether.testing._history import history_stats
from workers import DELAY, crash_and_resume, executed


def script(*cities: str) -> list[Turn]:
    return [
        Turn.tool_calls(
            *(ToolCall("forecast", {"city": c}) for c in cities),
            ToolCall("storm_warning", {"city": cities[0]}),
        ),
        Turn.text("Sunny everywhere."),
    ]


def test_mcp_step_names_are_pinned_and_the_capability_declared() -> None:
    assert (MCP_LIST_STEP, MCP_CALL_STEP) == (
        "pydantic_ai.mcp_list_tools",
        "pydantic_ai.mcp_call_tool",
    )
    adapter = adapter_named("pydantic_ai")
    assert Capability.MCP in adapter.capabilities
    assert {MCP_LIST_STEP, MCP_CALL_STEP} <= {s.name for s in adapter.steps()}


def test_an_mcp_toolset_without_an_id_is_refused() -> None:
    from pydantic_ai.mcp import MCPToolset

    from apps.pydantic_apps import forecast_server

    agent = Agent("test", name="pai-mcp-noid", toolsets=[MCPToolset(forecast_server().client)])
    with pytest.raises(ConfigurationError, match=r"needs an id.*MCPToolset\(\.\.\., id="):
        tether.durable(agent, local_worker=False)


async def test_mcp_tool_run_matches_plain_run_and_calls_once(
    runtime: Runtime,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("TETHER_TEST_CALLS", str(calls))
    from apps.pydantic_apps import forecast_server

    with ScriptedModelServer(script("Oslo", "Lima")) as server:
        model = OpenAIChatModel(
            "gpt-mcp", provider=OpenAIProvider(base_url=server.base_url, api_key="t")
        )
        toolset = forecast_server(include_instructions=True)
        agent = Agent(model, name="pai-mcp-inproc", toolsets=[toolset])
        plain = await agent.run("Weather in Oslo and Lima?")
        plain_calls = executed(calls)
        server.reset()
        calls.unlink()
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start("Weather in Oslo and Lima?")
        result = await handle.result()
        seen = server.steps_seen()
        first_request = server.requests[0].body_text
        last_request = server.requests[-1].body_text
    assert result.output == plain.output == "Sunny everywhere."
    assert _same_contents(result.all_messages(), plain.all_messages())
    assert plain_calls["forecast:Oslo"] == plain_calls["forecast:Lima"] == 1
    done = executed(calls)
    assert (done["forecast:Oslo"], done["forecast:Lima"]) == (1, 1)
    # The server's tool error is control flow (a retry prompt to the model), not a step retry.
    assert plain_calls["storm_warning:Oslo"] == done["storm_warning:Oslo"] == 1
    assert "Oslo: sunny, 21C" in last_request and "Lima: sunny, 21C" in last_request
    assert "the warning service is down" in last_request
    assert "Forecasts for cities." in first_request  # the server's instructions, via the step
    assert seen == {("gpt-mcp", 0): 1, ("gpt-mcp", 1): 1}
    stats = await history_stats(runtime.client, handle.id)
    names = [s.name for s in stats.completed()]
    # Listed once for the run (the server caches its tools), one step per call.
    assert names.count(MCP_LIST_STEP) == 1
    assert names.count(MCP_CALL_STEP) == 3
    assert len(POOL) == 1  # the worker keeps the server connected for later steps
    await replays_cleanly(runtime, handle.id)
    assert executed(calls) == done  # replaying reached no server


def _same_contents(a: list[Any], b: list[Any]) -> bool:
    def contents(msgs: list[Any]) -> list[Any]:
        return [
            (type(p).__name__, getattr(p, "content", None), getattr(p, "tool_name", None))
            for m in msgs
            for p in m.parts
        ]

    return contents(a) == contents(b)


async def test_mcp_run_survives_a_worker_kill_after_the_mcp_step(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.pydantic_apps import Deps, forecaster

    turns = [
        Turn.tool_calls(ToolCall("forecast", {"city": "Oslo"}), delay=DELAY),
        Turn.text("Oslo will be sunny.", delay=DELAY),
    ]
    with ScriptedModelServer(turns) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="t")
        plain = await forecaster.run(
            "Oslo?", deps=Deps("ada"), model=OpenAIChatModel("gpt-pai-mcp", provider=provider)
        )
        server.reset()
        # Steps: list tools (1), model (2), MCP call (3): the kill lands right after the call.
        result, run_id, done, calls = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.pydantic_apps:forecaster",
            forecaster,
            "Oslo?",
            3,
            deps=Deps("ada"),
        )
        seen = server.steps_seen()
    assert [s.name for s in done][:3] == [MCP_LIST_STEP, "pydantic_ai.model", MCP_CALL_STEP]
    assert result.output == plain.output == "Oslo will be sunny."
    assert calls["forecast:Oslo"] == 1, calls
    assert seen[("gpt-pai-mcp", 0)] == 1
    stats = await history_stats(runtime.client, run_id)
    assert [s.name for s in stats.completed()].count(MCP_CALL_STEP) == 1
    # Each worker process started the server once (the killed one, then its successor).
    assert sum(1 for k in calls.elements() if k.startswith("start:")) <= 2


def test_mcp_results_keep_their_parts_types_across_the_step() -> None:
    from pydantic_ai.messages import BinaryContent

    from tether.adapters.pydantic_ai._mcp import decode_result, encode_result

    image = BinaryContent(data=b"\x89PNG\xff\x00", media_type="image/png")
    for value in ["text", {"temp": 21}, image, [image, "caption", {"a": 1}]]:
        assert decode_result(json.loads(json.dumps(encode_result(value)))) == value


async def test_a_dead_server_is_restarted_and_an_uncached_list_is_asked_per_run_step(
    runtime: Runtime,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("TETHER_TEST_CALLS", str(calls))
    from apps.pydantic_apps import forecast_server

    turns = [Turn.tool_calls(ToolCall("forecast", {"city": "Oslo"})), Turn.text("Sunny.")]
    with ScriptedModelServer(turns + turns) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="t")
        toolset = forecast_server()
        toolset.cache_tools = False
        durable = tether.durable(
            Agent(
                OpenAIChatModel("gpt-a", provider=provider),
                name="pai-mcp-restart",
                toolsets=[toolset],
            ),
            runtime=runtime,
            task_queue=task_queue,
            local_worker=False,
        )
        first = await durable.start("Oslo?")
        assert (await first.result()).output == "Sunny."
        [pid] = [int(k.split(":")[1]) for k in executed(calls) if k.startswith("start:")]
        os.kill(pid, signal.SIGKILL)  # the pooled server dies between runs
        second = await durable.start("Oslo?")
        assert (await second.result()).output == "Sunny."
    done = executed(calls)
    assert done["forecast:Oslo"] == 2
    assert len([k for k in done if k.startswith("start:")]) == 2  # restarted once
    names = [s.name for s in (await history_stats(runtime.client, first.id)).completed()]
    # Not cached: listed for each of the run's two model requests.
    assert names.count(MCP_LIST_STEP) == 2
    await replays_cleanly(runtime, second.id)
