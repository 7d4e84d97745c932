"""The raw loop's conformance kit: Tether's neutral scenarios as raw-loop agents."""

from __future__ import annotations

from typing import Any

from tether.conformance_tests import ConformanceKit, KitEnv
from tether.conformance_tests.scenarios import MAIN, Scenario, ToolSpec
from tether.core.contract import StepKind
from tether.errors import RunFailedError
from tether_rawloop.agent import MaxTurnsExceeded, RawAgent, Tool, run_plain


def _tool(spec: ToolSpec, env: KitEnv) -> Tool:
    return Tool(spec.name, spec.description, env.tool_function(spec))


class RawLoopKit(ConformanceKit):
    adapter_name = "rawloop"
    # Literals, not the adapter's properties: a rename must fail the suite.
    pinned_steps: dict[str, StepKind] = {"rawloop.model": "model", "rawloop.tool": "tool"}

    def build(self, scenario: Scenario, env: KitEnv) -> object:
        return RawAgent(
            name=self.agent_name(scenario),
            model=env.lane(MAIN),
            base_url=env.base_url,
            instructions="You are a conformance scenario agent.",
            tools=tuple(_tool(spec, env) for spec in scenario.tools),
            structured=scenario.structured,
        )

    def run_options(self, scenario: Scenario) -> dict[str, Any]:
        return {"max_turns": scenario.max_turns} if scenario.max_turns else {}

    async def run_plain(self, agent: object, scenario: Scenario, env: KitEnv) -> object:
        assert isinstance(agent, RawAgent)
        return await run_plain(agent, scenario.prompt(), **self.run_options(scenario))

    def output(self, result: object) -> Any:
        return getattr(result, "output", None)

    def error_kind(self, error: BaseException) -> str | None:
        if isinstance(error, MaxTurnsExceeded):
            return "max_turns"
        if isinstance(error, RunFailedError) and error.error_type == "MaxTurnsExceeded":
            return "max_turns"
        return None
