"""MCP servers in durable OpenAI Agents SDK runs: a real stdio MCP server
(tests/apps/mcp_server.py), the SDK's real OpenAI model against the scripted model server,
a real dev server."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from agents import Agent, OpenAIResponsesModel, Runner
from openai import AsyncOpenAI
from temporalio.worker import Worker

import tether
from replay import replays_cleanly
from tether.adapters._connections import POOL
from tether.adapters.openai_agents._mcp import MCP_CALL_STEP, MCP_LIST_STEP
from tether.core.contract import Capability
from tether.core.runtime import Runtime
from tether.errors import ConfigurationError
from tether.plugins import adapter_named
from tether.testing import ScriptedModelServer, ToolCall, Turn
from tether.testing._history import history_stats
from workers import DELAY, crash_and_resume, executed


def model(server: ScriptedModelServer, lane: str) -> OpenAIResponsesModel:
    client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    return OpenAIResponsesModel(model=lane, openai_client=client)


def test_mcp_step_names_are_pinned_and_the_capability_declared() -> None:
    assert (MCP_LIST_STEP, MCP_CALL_STEP) == (
        "openai_agents.mcp_list_tools",
        "openai_agents.mcp_call_tool",
    )
    adapter = adapter_named("openai_agents")
    assert Capability.MCP in adapter.capabilities
    assert {MCP_LIST_STEP, MCP_CALL_STEP} <= {s.name for s in adapter.steps()}


def test_two_servers_with_one_name_are_refused() -> None:
    from apps.openai_apps import forecast_server

    agent = Agent(name="oa-dupes", mcp_servers=[forecast_server(), forecast_server()])
    with pytest.raises(ConfigurationError, match=r"several MCP servers are named \['forecasts'\]"):
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
    from apps.openai_apps import forecast_server

    turns = [
        Turn.tool_calls(
            ToolCall("forecast", {"city": "Oslo"}),
            ToolCall("forecast", {"city": "Lima"}),
            ToolCall("storm_warning", {"city": "Oslo"}),
        ),
        Turn.text("Sunny everywhere."),
    ]
    with ScriptedModelServer(turns) as server:
        plain_server = forecast_server()
        agent = Agent(
            name="oa-mcp-inproc",
            instructions="Use the forecast tool.",
            model=model(server, "gpt-mcp"),
            mcp_servers=[plain_server],
        )
        async with plain_server:
            plain = await Runner.run(agent, "Weather in Oslo and Lima?")
        plain_calls = executed(calls)
        server.reset()
        calls.unlink()
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start("Weather in Oslo and Lima?")
        result = await handle.result()
        seen = server.steps_seen()
        last_request = server.requests[-1].body_text
    assert result.final_output == plain.final_output == "Sunny everywhere."
    assert plain_calls["forecast:Oslo"] == plain_calls["forecast:Lima"] == 1
    done = executed(calls)
    assert (done["forecast:Oslo"], done["forecast:Lima"]) == (1, 1)
    # The server's tool error goes to the model as the SDK hands it; the call is not retried.
    assert plain_calls["storm_warning:Oslo"] == done["storm_warning:Oslo"] == 1
    assert "Oslo: sunny, 21C" in last_request and "Lima: sunny, 21C" in last_request
    assert "the warning service is down" in last_request
    assert seen == {("gpt-mcp", 0): 1, ("gpt-mcp", 1): 1}
    names = [s.name for s in (await history_stats(runtime.client, handle.id)).completed()]
    # The server caches its tool list, so the run lists once; one step per call.
    assert names.count(MCP_LIST_STEP) == 1
    assert names.count(MCP_CALL_STEP) == 3
    assert len(POOL) == 1  # the worker keeps the server connected for later steps
    await replays_cleanly(runtime, handle.id)
    assert executed(calls) == done  # replaying reached no server


async def test_mcp_run_survives_a_worker_kill_after_the_mcp_step(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import forecast_server, forecaster

    turns = [
        Turn.tool_calls(ToolCall("forecast", {"city": "Oslo"}), delay=DELAY),
        Turn.text("Oslo will be sunny.", delay=DELAY),
    ]
    with ScriptedModelServer(turns) as server:
        plain_server = forecast_server()
        async with plain_server:
            plain = await Runner.run(
                forecaster.clone(model=model(server, "gpt-oa-mcp"), mcp_servers=[plain_server]),
                "Oslo?",
            )
        server.reset()
        # Steps: list tools (1), model (2), MCP call (3): the kill lands right after the call.
        result, run_id, done, calls = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.openai_apps:forecaster",
            forecaster,
            "Oslo?",
            3,
        )
        seen = server.steps_seen()
    assert [s.name for s in done][:3] == [MCP_LIST_STEP, "openai_agents.model", MCP_CALL_STEP]
    assert result.final_output == plain.final_output == "Oslo will be sunny."
    assert calls["forecast:Oslo"] == 1, calls
    assert seen[("gpt-oa-mcp", 0)] == 1
    stats = await history_stats(runtime.client, run_id)
    assert [s.name for s in stats.completed()].count(MCP_CALL_STEP) == 1


async def test_a_dead_server_is_restarted_and_an_uncached_list_is_asked_per_turn(
    runtime: Runtime,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("TETHER_TEST_CALLS", str(calls))
    from apps.openai_apps import forecast_server

    turns = [Turn.tool_calls(ToolCall("forecast", {"city": "Oslo"})), Turn.text("Sunny.")]
    with ScriptedModelServer(turns + turns) as server:
        agent = Agent(
            name="oa-mcp-restart",
            model=model(server, "gpt-a"),
            mcp_servers=[forecast_server(cache=False)],
        )
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        first = await durable.start("Oslo?")
        assert (await first.result()).final_output == "Sunny."
        [pid] = [int(k.split(":")[1]) for k in executed(calls) if k.startswith("start:")]
        os.kill(pid, signal.SIGKILL)  # the pooled server dies between runs
        second = await durable.start("Oslo?")
        assert (await second.result()).final_output == "Sunny."
    done = executed(calls)
    assert done["forecast:Oslo"] == 2
    assert len([k for k in done if k.startswith("start:")]) == 2  # restarted once
    names = [s.name for s in (await history_stats(runtime.client, first.id)).completed()]
    # Not cached: listed for each of the run's two turns.
    assert names.count(MCP_LIST_STEP) == 2
    await replays_cleanly(runtime, second.id)
