"""The scripted OpenAI-compatible model server, driven by the real OpenAI client."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request

import openai
import pytest
from openai import AsyncOpenAI

from tether.testing import Fault, Script, ScriptedModelServer, ToolCall, Turn, turn_index


def client(server: ScriptedModelServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)


async def test_chat_completions_plain_and_streamed() -> None:
    script = [Turn.tool_calls(ToolCall("f", {"a": 1}), ToolCall("g", {})), Turn.text("done")]
    with ScriptedModelServer(script) as server:
        c = client(server)
        first = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        calls = first.choices[0].message.tool_calls or []
        assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
            ("f", {"a": 1}),
            ("g", {}),
        ]
        history = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
        ]
        stream = await c.chat.completions.create(
            model="m", messages=history, stream=True, stream_options={"include_usage": True}
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
        assert text == "done"
        assert usage is not None and usage.completion_tokens > 0
        assert server.steps_seen() == {("m", 0): 1, ("m", 1): 1}


async def test_responses_plain_and_streamed() -> None:
    with ScriptedModelServer([Turn.tool_calls(ToolCall("f", {"x": 2})), Turn.text("ok")]) as s:
        c = client(s)
        first = await c.responses.create(model="m", input="hi")
        [call] = first.output
        assert call.type == "function_call"
        assert call.name == "f"
        items = [
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": call.call_id, "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": call.call_id, "output": "2"},
        ]
        stream = await c.responses.create(model="m", input=items, stream=True)
        kinds, final = [], None
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.completed":
                final = event.response
        assert kinds[0] == "response.created"
        assert "response.output_text.delta" in kinds
        assert final is not None and final.output_text == "ok"


def test_turn_index_counts_model_turns_not_items() -> None:
    parallel = {
        "input": [
            {"role": "user", "content": "q"},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {"type": "function_call_output", "call_id": "b", "output": "1"},
        ]
    }
    assert turn_index("responses", parallel) == 1
    assert turn_index("chat", {"messages": [{"role": "assistant"}, {"role": "tool"}]}) == 1


async def test_a_repeated_request_gets_the_same_reply_and_is_counted_again() -> None:
    with ScriptedModelServer([Turn.text("same")]) as server:
        c = client(server)
        for _ in range(2):
            r = await c.responses.create(model="m", input="hi")
            assert r.output_text == "same"
        assert server.count("m", 0) == 2
        assert server.served("m", 0) == 2


async def test_faults_rate_limit_server_error_malformed() -> None:
    turn = Turn.text(
        "finally",
        faults=[Fault.rate_limit(retry_after=2.5), Fault.server_error(503), Fault.malformed()],
    )
    with ScriptedModelServer([turn]) as server:
        c = client(server)
        with pytest.raises(openai.RateLimitError) as limited:
            await c.responses.create(model="m", input="hi")
        assert limited.value.response.headers["retry-after"] == "2.5"
        with pytest.raises(openai.InternalServerError):
            await c.responses.create(model="m", input="hi")
        with pytest.raises((openai.APIError, ValueError)):  # a body that is not JSON
            await c.responses.create(model="m", input="hi")
        assert (await c.responses.create(model="m", input="hi")).output_text == "finally"
        assert server.count("m", 0) == 4
        assert server.served("m", 0) == 1


def test_a_hang_is_woken_by_stop() -> None:
    server = ScriptedModelServer([Turn.text("late", faults=[Fault.hang(60)])]).start()
    import threading

    def call() -> None:
        req = urllib.request.Request(
            f"{server.base_url}/responses",
            data=json.dumps({"model": "m", "input": "hi"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with contextlib.suppress(Exception):
            urllib.request.urlopen(req, timeout=10).read()

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    t.join(5)
    assert time.monotonic() - started < 3


async def test_past_the_end_of_the_script_is_a_clear_400() -> None:
    with ScriptedModelServer({"m": [Turn.text("only")]}) as server:
        items = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "only"}]
        with pytest.raises(openai.BadRequestError, match=r"lane 'm' has 1 turns.*turn 1"):
            await client(server).responses.create(model="m", input=items)


def test_script_json_round_trip_and_stats_endpoint() -> None:
    script = Script(
        {
            "a": [Turn.tool_calls(ToolCall("f", {"x": 1}), delay=0.1), Turn.text("t")],
            "b": {2: Turn.json({"k": 1}, faults=[Fault.rate_limit(1)])},
        }
    )
    again = Script.from_json(script.to_json())
    assert again.lanes == script.lanes
    with ScriptedModelServer(again) as server:
        body = json.dumps({"model": "a", "messages": [{"role": "user", "content": "x"}]})
        req = urllib.request.Request(
            f"{server.base_url}/chat/completions",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).read()
        with urllib.request.urlopen(f"{server.base_url}/_tether/stats", timeout=10) as resp:
            stats = json.loads(resp.read())
        assert stats["steps"] == [{"lane": "a", "turn": 0, "count": 1}]
        assert stats["usage"]["input_tokens"] == server.total_usage().input_tokens > 0
