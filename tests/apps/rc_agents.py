"""Agents of both frameworks in versions that differ as a deploy would change them, for
`tether replay-check` (tests/test_replay_check.py): a run recorded with ``rc_base`` is
checked against each ``rc_*`` module. Models by name: tests point OPENAI_BASE_URL at the
scripted model server."""

from __future__ import annotations

from typing import Annotated, Any

from agents import Agent, FunctionTool, function_tool
from pydantic import AfterValidator, BaseModel
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai import RunContext
from pydantic_ai.tools import ToolDefinition

PROMPT = "Answer with the alerts."


class TranslateArgs(BaseModel):
    text: str


def plain_input(options: Any) -> str:
    return f"Translate: {options['params']['text']}"


def framed_input(options: Any) -> str:
    return f"Translate into French, keep it short: {options['params']['text']}"


def build(
    *,
    prompt: str = PROMPT,
    tool_before: bool = False,
    translate_input: Any = plain_input,
    upper_state: bool = False,
    unreached_tool: bool = False,
    new_tool_body: bool = False,
) -> tuple[Agent[Any], PydanticAgent[None, str]]:
    """The OpenAI Agents SDK agent ``rc-oa`` and the Pydantic AI agent ``rc-pai``."""

    @function_tool
    def get_weather_alerts(state: str) -> str:
        """Active weather alerts for a US state."""
        if new_tool_body:  # a tool's code runs in its step: its result is recorded
            return f"ALERTS ({state}): heat advisory, updated"
        return f"alerts for {state}: heat advisory"

    @function_tool
    def get_air_quality(state: str) -> str:
        """Air quality for a US state."""
        return f"air in {state}: good"

    @function_tool
    def get_forecast(state: str) -> str:
        """The forecast for a US state."""
        return f"forecast for {state}: sunny"

    specialist_tools: list[FunctionTool] = [get_weather_alerts]
    if unreached_tool:  # the recorded run never handed off to the specialist
        specialist_tools.append(get_forecast)
    specialist = Agent(
        name="rc_specialist",
        instructions="You answer alert questions.",
        tools=list(specialist_tools),
        model="gpt-rc-specialist",
    )
    translator = Agent(
        name="rc-translator", instructions="Translate to French.", model="gpt-rc-translator"
    )
    translate = translator.as_tool(
        tool_name="translate",
        tool_description="Translate text to French.",
        parameters=TranslateArgs,
        input_builder=translate_input,
    )
    tools: list[FunctionTool] = [get_weather_alerts, translate]
    if tool_before:
        tools.insert(0, get_air_quality)
    oa = Agent(
        name="rc-oa",
        instructions=prompt,
        tools=list(tools),
        handoffs=[specialist],
        model="gpt-rc-oa",
    )

    pai: PydanticAgent[None, str] = PydanticAgent(
        "openai:gpt-rc-pai", name="rc-pai", instructions=prompt
    )
    if tool_before:

        @pai.tool_plain
        def get_air_quality_pai(state: str) -> str:
            """Air quality for a US state."""
            return f"air in {state}: good"

    if upper_state:

        @pai.tool_plain(name="get_weather_alerts")
        def alerts_upper(state: Annotated[str, AfterValidator(str.upper)]) -> str:
            """Active weather alerts for a US state."""
            return f"alerts for {state}: heat advisory"

    else:

        @pai.tool_plain(name="get_weather_alerts")
        def alerts(state: str) -> str:
            """Active weather alerts for a US state."""
            if new_tool_body:
                return f"ALERTS ({state}): heat advisory, updated"
            return f"alerts for {state}: heat advisory"

    if unreached_tool:

        async def only_late(ctx: RunContext[None], tool: ToolDefinition) -> ToolDefinition | None:
            return tool if ctx.run_step > 10 else None  # offered from the 10th model call on

        @pai.tool_plain(prepare=only_late)
        def get_forecast_pai(state: str) -> str:
            """The forecast for a US state."""
            return f"forecast for {state}: sunny"

    return oa, pai
