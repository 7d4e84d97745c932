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


def _body_with_everything(n: int) -> dict[str, Any]:
    """A request body with what JSON encoders may differ on: escapes, non-ASCII text,
    control characters, floats, big and negative integers, nesting, booleans and nulls."""
    messages = _chat_messages(n)
    messages.append({"role": "user", "content": 'quote " slash \\ tab \t nl \n é 漢字 🙂 \x01'})
    return {
        "model": "m",
        "messages": messages,
        "temperature": 0.7,
        "top_p": 1.0,
        "seed": -(2**62),
        "metadata": {"third": 1 / 3, "big": 123456789.125, "list": [None, True, False]},
        "stream": False,
    }


def _encoders() -> tuple[Any, Any]:
    """The client's own body encoder, and the name its request builder calls."""
    import openai._base_client as base_client
    from openai._utils._json import openapi_dumps

    assert fast_path_installed()
    return openapi_dumps, base_client.openapi_dumps


def test_request_bodies_are_encoded_with_orjson_to_the_clients_bytes() -> None:
    client_dumps, hooked = _encoders()
    body = _body_with_everything(300)
    assert hooked(body) == client_dumps(body)  # outside the block: the client's own
    with plain_conversation():
        fast = hooked(body)
    assert json.loads(fast) == body
    assert fast == client_dumps(body)
    # Floats in exponent form are written without the exponent's padding: the same values.
    # (which also shows that orjson wrote them: the client writes 1e-07).
    floats = {"tiny": 1e-7, "huge": 1e16, "neg": -2.5e-12}
    with plain_conversation():
        fast = hooked(floats)
    assert json.loads(fast) == floats
    assert b'"tiny":1e-7' in fast and b'"tiny":1e-07' in client_dumps(floats)


def test_dates_and_models_in_a_body_are_converted_as_the_client_does() -> None:
    import datetime

    class Options(BaseModel):
        effort: str = "low"
        summary: str | None = None

    client_dumps, hooked = _encoders()
    when = datetime.datetime(2026, 12, 2, 9, 30, 0, 123456, tzinfo=datetime.UTC)
    body = {"model": "m", "when": when, "reasoning": Options()}
    with plain_conversation():
        fast = hooked(body)
    assert fast == client_dumps(body)
    assert json.loads(fast)["reasoning"] == {}  # only what was set, as the client sends it


def test_a_body_orjson_refuses_is_encoded_by_the_client() -> None:
    import datetime

    client_dumps, hooked = _encoders()
    for body in ({"model": "m", "seed": 2**70}, {"model": "m", "metadata": {1: "int key"}}):
        with plain_conversation():
            assert hooked(body) == client_dumps(body)
    # A value the client's encoder refuses is refused the same way.
    with plain_conversation(), pytest.raises(TypeError, match="date is not JSON serializable"):
        hooked({"model": "m", "day": datetime.date(2026, 12, 2)})


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
