"""The agents bench/profile_step.py hosts in a `tether worker` subprocess: one tool loop per
framework against the scripted model server at $OPENAI_BASE_URL, tool results of
$BENCH_RESULT_BYTES bytes."""

from __future__ import annotations

import os

from agents import Agent as OpenAIAgent
from agents import function_tool
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

RESULT_BYTES = int(os.environ.get("BENCH_RESULT_BYTES", "2000"))
MODEL = os.environ.get("BENCH_MODEL", "profile")


@function_tool
async def lookup(i: int) -> str:
    """A record of RESULT_BYTES bytes."""
    return f"record {i}: " + "x" * RESULT_BYTES


openai_agent = OpenAIAgent(
    name="profile-openai",
    instructions="Look the records up.",
    model=MODEL,
    tools=[lookup],
)


def _provider() -> OpenAIProvider:
    return OpenAIProvider(
        base_url=os.environ.get("OPENAI_BASE_URL"),
        api_key=os.environ.get("OPENAI_API_KEY", "bench"),
    )


pydantic_agent: PydanticAgent[None, str] = PydanticAgent(
    OpenAIChatModel(MODEL, provider=_provider()),
    name="profile-pydantic",
    instructions="Look the records up.",
)


@pydantic_agent.tool_plain
async def lookup_record(i: int) -> str:
    """A record of RESULT_BYTES bytes."""
    return f"record {i}: " + "x" * RESULT_BYTES


# The same loop on the Responses API, chaining each request to the previous response
# (bench/long_run.py --responses-state): a request sends only the new messages.
pydantic_responses_agent: PydanticAgent[None, str] = PydanticAgent(
    OpenAIResponsesModel(MODEL, provider=_provider()),
    name="profile-pydantic",
    instructions="Look the records up.",
    model_settings={"openai_previous_response_id": "auto"},  # type: ignore[typeddict-unknown-key]
)
pydantic_responses_agent.tool_plain(lookup_record)
