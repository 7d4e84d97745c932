"""Model steps send the conversation without the OpenAI client's per-item schema walk, and
the provider receives exactly the request the client's usual path sends."""

from __future__ import annotations

import json
from typing import Annotated, Any

import openai._utils._transform as transform
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel
from typing_extensions import TypedDict

from fresh import run_fresh
from tether.adapters import _openai_requests
from tether.adapters._openai_requests import fast_path_installed, plain_conversation
from tether.testing import RecordedRequest, ScriptedModelServer, Turn


def _responses_input(n: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(n):
        items.append(
            {
                "type": "function_call",
                "call_id": f"call_{i}",
                "name": "lookup",
                "arguments": json.dumps({"i": i}),
            }
        )
        items.append({"type": "function_call_output", "call_id": f"call_{i}", "output": "x" * 50})
    return items


def _chat_messages(n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(n):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "x" * 50})
    return messages


def _answer(request: RecordedRequest) -> Turn:
    return Turn.text("ok")


TOOLS = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]


@pytest.fixture
def walked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many typed dicts the client's transform walked (one entry per walk)."""
    seen: list[int] = []
    real = transform._async_transform_typeddict

    async def counting(data: Any, expected_type: Any) -> Any:
        seen.append(1)
        return await real(data, expected_type)

    monkeypatch.setattr(transform, "_async_transform_typeddict", counting)
    return seen


def test_the_hook_is_installed_for_the_pinned_openai_client() -> None:
    assert fast_path_installed()


async def test_responses_request_is_the_same_and_skips_the_walk(walked: list[int]) -> None:
    items = _responses_input(100)
    with ScriptedModelServer(responder=_answer) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k")
        await client.responses.create(model="m", input=items, tools=TOOLS)  # type: ignore[arg-type]
        usual = len(walked)
        walked.clear()
        with plain_conversation():
            await client.responses.create(model="m", input=items, tools=TOOLS)  # type: ignore[arg-type]
        fast = len(walked)
        await client.close()
        first, second = server.requests
    assert first.body == second.body
    assert second.body["input"] == items
    # The usual path walks every item against the item union; the fast path only the rest.
    assert usual > len(items) and fast < 50, (usual, fast)


async def test_chat_request_is_the_same_and_skips_the_walk(walked: list[int]) -> None:
    messages = _chat_messages(100)
    with ScriptedModelServer(responder=_answer) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k")
        await client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        usual = len(walked)
        walked.clear()
        with plain_conversation():
            await client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        fast = len(walked)
        await client.close()
        first, second = server.requests
    assert first.body == second.body
    assert usual > len(messages) and fast < 50, (usual, fast)


async def test_plain_json_fields_without_renamed_keys_are_sent_as_they_are(
    walked: list[int],
) -> None:
    # Twenty tools: the client walked each against its union of tool types at every request.
    tools = [
        {"type": "function", "name": f"tool_{i}", "parameters": {"type": "object"}}
        for i in range(20)
    ]
    options: dict[str, Any] = {"tool_choice": "auto", "reasoning": {"effort": "low"}}
    with ScriptedModelServer(responder=_answer) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k")
        await client.responses.create(model="m", input="go", tools=tools, **options)  # type: ignore[arg-type]
        usual = len(walked)
        walked.clear()
        with plain_conversation():
            await client.responses.create(model="m", input="go", tools=tools, **options)  # type: ignore[arg-type]
        fast = len(walked)
        await client.close()
        first, second = server.requests
    assert first.body == second.body
    assert second.body["tools"] == tools
    # Only the (empty) rest of the parameters is walked, not each tool.
    assert usual > len(tools) and fast <= 1, (usual, fast)


class _Card(TypedDict):
    card_id: Annotated[str, transform.PropertyInfo(alias="cardID")]


class _Params(TypedDict, total=False):
    cards: list[_Card]
    note: dict[str, str]


async def test_a_field_whose_type_renames_keys_is_still_transformed() -> None:
    hooked = _openai_requests._hooked(transform.async_maybe_transform)
    data = {"cards": [{"card_id": "c1"}], "note": {"card_id": "kept"}}
    with plain_conversation():
        out = await hooked(data, _Params)
    assert out == {"cards": [{"cardID": "c1"}], "note": {"card_id": "kept"}}


class Note(BaseModel):
    type: str = "message"
    role: str = "user"
    content: str = "a model object, not JSON"


async def test_a_conversation_that_is_not_plain_json_takes_the_usual_path(
    walked: list[int],
) -> None:
    items: list[Any] = [{"role": "user", "content": "go"}, Note()]
    with ScriptedModelServer(responder=_answer) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k")
        await client.responses.create(model="m", input=items)
        walked.clear()
        with plain_conversation():
            await client.responses.create(model="m", input=items)
        await client.close()
        usual, fast = server.requests
    assert fast.body == usual.body
    assert walked, "the model object was not transformed the client's usual way"


async def test_the_agents_sdk_sends_a_plain_conversation_without_copying_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Agents SDK's Responses model sends the same request inside plain_conversation,
    without its two recursive copies of the input; items it edits in place (provider_data)
    are still copied, so the caller's items are never changed."""
    import agents.util._json as sdk_json
    from agents import ModelSettings, ModelTracing, OpenAIResponsesModel

    from tether.adapters._openai_requests import install_sdk

    assert install_sdk()
    copies: list[int] = []
    real = sdk_json._to_dump_compatible_internal

    def counting(obj: Any) -> Any:
        copies.append(1)
        return real(obj)

    monkeypatch.setattr(sdk_json, "_to_dump_compatible_internal", counting)
    items = _responses_input(100)
    foreign = [*items, {"role": "user", "content": "more", "provider_data": {"model": "x"}}]
    with ScriptedModelServer(responder=_answer) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k")
        model = OpenAIResponsesModel(model="m", openai_client=client)

        async def send(conversation: list[dict[str, Any]]) -> int:
            copies.clear()
            await model.get_response(
                None,
                conversation,
                ModelSettings(),
                [],
                None,
                [],
                ModelTracing.DISABLED,
                previous_response_id=None,
                conversation_id=None,
                prompt=None,
            )  # type: ignore[arg-type]
            return len(copies)

        usual = await send(items)
        with plain_conversation():
            fast = await send(items)
            edited = await send(foreign)
        await client.close()
        first, second, third = server.requests
    assert first.body == second.body and second.body["input"] == items
    assert usual > len(items) and fast == 0, (usual, fast)
    assert edited > len(items)  # copied: the SDK drops provider_data from what it sends
    assert "provider_data" not in third.body["input"][-1]
    assert foreign[-1]["provider_data"] == {"model": "x"}  # the caller's item untouched


_WARM_UP = """
import asyncio, sys
from openai import AsyncOpenAI
from tether.adapters import _openai_requests
from tether.testing import ScriptedModelServer, ToolCall, Turn

if sys.argv[1] == "warm":
    _openai_requests.warm_up("responses")
    _openai_requests.warm_up("chat")
"""

_FIRST_CALLS = """
async def main():
    script = [Turn.tool_calls(ToolCall("lookup", {"i": 1})), Turn.text("done")]
    with ScriptedModelServer({"r": script, "c": script}) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        with _openai_requests.plain_conversation():
            for _ in script:
                await client.responses.create(model="r", input=[{"role": "user", "content": "go"}])
                await client.chat.completions.create(
                    model="c", messages=[{"role": "user", "content": "go"}]
                )
asyncio.run(main())
print(len(built))
"""


@pytest.mark.parametrize("warm", ["warm", "cold"])
def test_a_worker_warm_up_leaves_a_first_model_call_nothing_to_build(warm: str) -> None:
    """A new worker's first model step is the step a run resumed after a crash waits for.
    Without the warm-up, the OpenAI client builds its response validators there (0.3 s on
    a quiet 2-core machine); after it, the first replies (a tool call, a text) of both
    APIs build no Pydantic schema. Run in a fresh interpreter: this one is warm already."""
    built = int(run_fresh(_WARM_UP, _FIRST_CALLS, warm)[-1])
    if warm == "warm":
        assert built == 0
    else:
        assert built > 0  # the check sees the builds the warm-up saves
