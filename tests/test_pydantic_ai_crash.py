"""Pydantic AI runs survive SIGKILLed worker subprocesses at every step boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn
from tether.testing._history import history_stats
from workers import DELAY, crash_and_resume


async def plain_output(agent: Any, server: ScriptedModelServer, prompt: str, deps: Any) -> Any:
    """The same agent without Tether, against the same script (model pointed at the server)."""
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=server.base_url, api_key="t")
    model = OpenAIResponsesModel(agent.model.model_name, provider=provider)
    try:
        return (await agent.run(prompt, deps=deps, model=model)).output
    finally:
        server.reset()


def weather_script() -> list[Turn]:
    return [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=DELAY),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"}), delay=DELAY),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "TX"}), delay=DELAY),
        Turn.text("CA has a heat advisory.", delay=DELAY),
    ]


@pytest.mark.parametrize("kill_after", range(1, 8))
async def test_pydantic_run_survives_sigkill_after_every_step(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path, kill_after: int
) -> None:
    from apps.pydantic_apps import Deps, weather

    deps = Deps(user="ada")
    with ScriptedModelServer(weather_script()) as server:
        expected = await plain_output(weather, server, "alerts?", deps)
        result, run_id, done_at_kill, tools = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.pydantic_apps:weather",
            weather,
            "alerts?",
            kill_after,
            deps=deps,
        )
        assert result.output == expected
        seen = server.steps_seen()
    stats = await history_stats(runtime.client, run_id)
    assert len(stats.completed()) == 7
    completed_models = sum(1 for s in done_at_kill if s.name == "pydantic_ai.model")
    for turn in range(completed_models):
        assert seen[("gpt-pai-weather", turn)] == 1, (turn, seen)
    assert sum(seen.values()) <= 4 + 1
    completed_tools = sum(1 for s in done_at_kill if s.name == "pydantic_ai.tool")
    for state in ["CA", "NY", "TX"][:completed_tools]:
        assert tools[f"get_weather_alerts:{state}"] == 1, tools
    assert sum(tools.values()) <= 3 + 1


async def test_structured_output_deps_and_model_retry_survive_a_kill(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.pydantic_apps import Answer, Deps, structured

    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "California"}), delay=DELAY),
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"}), delay=DELAY),
        Turn.json({"summary": "CA is quiet", "states": ["CA"]}, delay=DELAY),
    ]
    with ScriptedModelServer(script) as server:
        expected = await plain_output(structured, server, "CA?", Deps("ada"))
        result, _, _, tools = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.pydantic_apps:structured",
            structured,
            "CA?",
            3,
            deps=Deps("ada"),
        )
    assert result.output == expected == Answer(summary="CA is quiet", states=["CA"])
    assert tools["lookup:California-retry0"] == 1
    assert tools["lookup:CA-retry1"] in (1, 2)  # in flight at the kill
