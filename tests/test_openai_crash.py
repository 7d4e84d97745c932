"""Crash and resume with real worker subprocesses killed by SIGKILL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents import Runner
from openai import AsyncOpenAI

from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn
from tether.testing._history import history_stats
from workers import DELAY, crash_and_resume


def weather_script() -> list[Turn]:
    return [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=DELAY),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"}), delay=DELAY),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "TX"}), delay=DELAY),
        Turn.text("CA has a heat advisory.", delay=DELAY),
    ]


async def plain_output(agent: Any, server: ScriptedModelServer, prompt: str) -> Any:
    """The same agent run without Tether, against the same script."""
    from agents import set_default_openai_client

    set_default_openai_client(AsyncOpenAI(base_url=server.base_url, api_key="t"), False)
    try:
        return (await Runner.run(agent, prompt)).final_output
    finally:
        server.reset()


@pytest.mark.parametrize("kill_after", range(1, 8))
async def test_weather_run_survives_sigkill_after_every_step(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path, kill_after: int
) -> None:
    from apps.openai_apps import weather

    with ScriptedModelServer(weather_script()) as server:
        expected = await plain_output(weather, server, "alerts?")
        result, run_id, done_at_kill, tools = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.openai_apps:weather",
            weather,
            "alerts?",
            kill_after,
        )
        assert result.final_output == expected
        seen = server.steps_seen()
    stats = await history_stats(runtime.client, run_id)
    assert len(stats.completed()) == 7
    # Model calls: every one completed before the kill was made exactly once; only a call in
    # flight at the kill may have been made twice.
    completed_models = sum(1 for s in done_at_kill if s.name == "openai_agents.model")
    for turn in range(completed_models):
        assert seen[("gpt-weather", turn)] == 1, (turn, seen)
    assert sum(seen.values()) <= 4 + 1
    # Tools: the same, counted inside the tool.
    completed_tools = sum(1 for s in done_at_kill if s.name == "openai_agents.tool")
    for state in ["CA", "NY", "TX"][:completed_tools]:
        assert tools[f"get_weather_alerts:{state}"] == 1, tools
    assert sum(tools.values()) <= 3 + 1


async def test_handoff_survives_a_worker_kill(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import triage

    script = {
        "gpt-triage": [Turn.tool_calls(ToolCall("transfer_to_specialist", {}), delay=DELAY)],
        "gpt-specialist": {
            1: Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=DELAY),
            2: Turn.text("specialist: CA heat advisory", delay=DELAY),
        },
    }
    with ScriptedModelServer(script) as server:
        expected = await plain_output(triage, server, "alerts?")
        result, _, _, tools = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.openai_apps:triage",
            triage,
            "alerts?",
            2,
        )
        assert result.final_output == expected == "specialist: CA heat advisory"
        assert result.last_agent == "specialist"
        # Both model calls completed before the kill: made once. The tool was in flight at
        # the kill, so it may have started twice; it completed once.
        assert server.count("gpt-triage", 0) == 1
        assert server.count("gpt-specialist", 1) == 1
        assert tools["get_weather_alerts:CA"] in (1, 2)


async def test_agent_as_tool_survives_a_worker_kill(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import orchestrator

    script = {
        "gpt-orchestrator": [
            Turn.tool_calls(ToolCall("translate", {"input": "heat advisory"}), delay=DELAY),
            Turn.text("en francais: alerte canicule", delay=DELAY),
        ],
        "gpt-translator": [Turn.text("alerte canicule", delay=DELAY)],
    }
    with ScriptedModelServer(script) as server:
        expected = await plain_output(orchestrator, server, "translate")
        # Kill after the sub-agent's model call completed, inside the agent-as-tool.
        result, _, _, _ = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.openai_apps:orchestrator",
            orchestrator,
            "translate",
            2,
        )
        assert result.final_output == expected
        assert server.count("gpt-orchestrator", 0) == 1
        assert server.count("gpt-translator", 0) == 1
