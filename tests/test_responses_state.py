"""The opt-in Responses state mode of the OpenAI Agents SDK adapter
(``auto_previous_response_id=True``): after the first, each model step sends only the items
after the previous response, naming it; lost state falls back to a full request, recorded.
Real dev server, real OpenAI client against the scripted server, which keeps responses by id.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    function_tool,
    handoff,
)
from openai import AsyncOpenAI
from temporalio.worker import Worker

import tether
from hitl_helpers import all_events
from tether.core.runtime import Runtime
from tether.errors import ConfigurationError
from tether.testing import Fault, RecordedRequest, ScriptedModelServer, ToolCall, Turn
from workers import crash_and_resume

STATE = {"auto_previous_response_id": True, "max_turns": 100}


def client_for(server: ScriptedModelServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)


def loop_script(n: int, **first: Any) -> list[Turn]:
    """``n`` model calls: ``n - 1`` tool calls, then the answer."""
    turns = [Turn.tool_calls(ToolCall("lookup", {"i": i})) for i in range(n - 1)]
    if first:
        turns[1] = Turn.tool_calls(ToolCall("lookup", {"i": 1}), **first)
    return [*turns, Turn.text(f"looked up {n - 1}")]


def lookup_agent(name: str, server: ScriptedModelServer, *, chat: bool = False) -> Agent[Any]:
    @function_tool
    def lookup(i: int) -> str:
        """A 2 KB record."""
        return f"record {i}: " + "x" * 2000

    model: Any = (
        OpenAIChatCompletionsModel(model="gpt-test", openai_client=client_for(server))
        if chat
        else OpenAIResponsesModel(model="gpt-test", openai_client=client_for(server))
    )
    return Agent(name=name, instructions="Look records up.", tools=[lookup], model=model)


def wrap(agent: Any, runtime: Runtime, task_queue: str) -> tether.DurableAgent:
    """Any framework's agent, run by the test's worker only."""
    return tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)


def served(server: ScriptedModelServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.status == 200]


def input_of(req: RecordedRequest) -> list[Any]:
    sent = req.body["input"]
    return sent if isinstance(sent, list) else [sent]


async def test_each_step_after_the_first_sends_only_new_items(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(loop_script(6)) as server:
        agent = lookup_agent("chained", server)
        plain = await wrap(agent, runtime, task_queue).run("look up", max_turns=100)
        full = served(server)
        server.reset()
        server.expire_responses()

        result = await wrap(agent, runtime, task_queue).run("look up 2", **STATE)
        chained = served(server)

    assert result.final_output == plain.final_output == "looked up 5"
    assert [r.turn for r in chained] == list(range(6))  # the server saw the whole conversation
    assert chained[0].previous_response_id is None
    for before, req in itertools.pairwise(chained):
        # Named: the response the previous step got; sent: that step's tool output only.
        assert req.previous_response_id == f"resp_gpt_test_{before.turn}"
        assert [item["type"] for item in input_of(req)] == ["function_call_output"]
    assert all(r.previous_response_id is None for r in full)
    assert len(input_of(full[-1])) == 11  # without the mode: the whole conversation


async def test_bytes_sent_per_step_are_flat_in_the_mode(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(loop_script(40)) as server:
        agent = lookup_agent("flat", server)
        await wrap(agent, runtime, task_queue).run("look up", **STATE)
        chained = [r.size for r in served(server)]
        server.reset()
        await wrap(agent, runtime, task_queue).run("look up", max_turns=100)
        full = [r.size for r in served(server)]

    # Step 5 and step 40 send one 2 KB tool output each (plus instructions and tools): the
    # same size, give or take the digits of ids. Without the mode, step 40 sends 39 of them.
    assert abs(chained[39] - chained[4]) < 0.05 * chained[4], chained
    assert max(chained[1:]) < 1.1 * chained[4]
    assert full[39] > 6 * full[4], full
    assert full[39] > 20 * chained[39]


async def test_an_expired_response_falls_back_to_a_full_request_recorded(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    holder: dict[str, ScriptedModelServer] = {}

    @function_tool
    def lookup(i: int) -> str:
        """A record; the provider forgets every stored response after the second."""
        if i == 2:
            holder["server"].expire_responses()
        return f"record {i}"

    with ScriptedModelServer(loop_script(6)) as server:
        holder["server"] = server
        model = OpenAIResponsesModel(model="gpt-test", openai_client=client_for(server))
        agent = Agent(name="expiring", tools=[lookup], model=model)
        handle = await wrap(agent, runtime, task_queue).start("look up", **STATE)
        result = await handle.result()
        events = await all_events(handle)
        requests = server.requests

    assert result.final_output == "looked up 5"
    refused = [r for r in requests if r.status == 400]
    assert [r.previous_response_id for r in refused] == ["resp_gpt_test_2"]
    ok = [r for r in requests if r.status == 200]
    assert [r.turn for r in ok] == list(range(6))  # each model call made once
    # Turn 3 was sent again, whole and without a previous response; later turns chain again.
    assert ok[3].previous_response_id is None
    assert len(input_of(ok[3])) == 7
    assert [r.previous_response_id for r in ok[4:]] == ["resp_gpt_test_3", "resp_gpt_test_4"]
    [fallback] = [e for e in events if e.type == "model.state_fallback"]
    assert fallback.data["fallback"] == "full"
    assert "resp_gpt_test_2" in str(fallback.data["reason"])
    # Recorded in the step's outcome in the run's history as well.
    history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
    results = [
        e.activity_task_completed_event_attributes.result.payloads[0].data
        for e in history.events
        if e.HasField("activity_task_completed_event_attributes")
    ]
    states = [json.loads(r)["value"].get("state") for r in results if b'"output"' in r]
    assert states[0] is None
    assert states[1] == {"previous_response_id": "resp_gpt_test_0", "sent_items": 1}
    assert states[3] is not None and states[3]["fallback"] == "full"
    assert states[4] == {"previous_response_id": "resp_gpt_test_3", "sent_items": 1}


async def test_the_chain_goes_on_across_continue_as_new(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(loop_script(8)) as server:
        agent = lookup_agent("continued", server)
        handle = await wrap(agent, runtime, task_queue).start(
            "look up", continue_as_new=tether.ContinueAsNew(every_steps=4), **STATE
        )
        result = await handle.result()
        raw = await handle.raw_result()
        chained = served(server)

    assert result.final_output == "looked up 7"
    assert raw.segments >= 3  # continued as new at least twice
    assert [r.turn for r in chained] == list(range(8))  # each model call made once
    # A new segment's first request continues the stored response like any other: the
    # conversation is not sent whole again.
    for before, req in itertools.pairwise(chained):
        assert req.previous_response_id == f"resp_gpt_test_{before.turn}"
        assert [item["type"] for item in input_of(req)] == ["function_call_output"]


async def test_a_segment_reads_a_large_conversation_without_storing_it_again(
    runtime: Runtime, task_queue: str, worker: Worker, state_dir: Path
) -> None:
    """A continued segment whose loop needs the whole conversation (here: a handoff filters
    the history it hands on) first reads it from the store; when that is large (past the
    size that goes to the store), its history names the stored chain instead of a new blob
    holding the conversation again."""
    blobs_before = {f for f in (state_dir / "store").rglob("*") if f.is_file()}
    with ScriptedModelServer(loop_script(90)) as server:
        agent = lookup_agent("segments", server)
        agent.handoffs = [handoff(Agent(name="segments-filtered"), input_filter=lambda d: d)]
        handle = await wrap(agent, runtime, task_queue).start(
            "look up", max_turns=200, continue_as_new=tether.ContinueAsNew(every_steps=60)
        )
        result = await handle.result()
        raw = await handle.raw_result()
        histories = []
        run_id: str | None = None
        while True:  # the segments, newest first, through their first events
            segment = runtime.client.get_workflow_handle(handle.id, run_id=run_id)
            history = await segment.fetch_history()
            histories.append(history)
            started = history.events[0].workflow_execution_started_event_attributes
            run_id = started.continued_execution_run_id
            if not run_id:
                break

    assert result.final_output == "looked up 89"
    assert raw.segments == len(histories) >= 3
    loads = [
        e.activity_task_completed_event_attributes.result.payloads[0]
        for h in histories
        for e in h.events
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.result.payloads[0].ByteSize() < 1024
        and b'"chain"' in e.activity_task_completed_event_attributes.result.payloads[0].data
    ]
    # The last segments read conversations of 120-180 KB: named by their chain head.
    assert len(loads) >= 1
    # The store holds the conversation once, as its per-step segments: no blob near a whole
    # conversation's size (each tool output is 2 KB).
    new = [f for f in (state_dir / "store").rglob("*") if f.is_file() and f not in blobs_before]
    assert new
    assert max(f.stat().st_size for f in new) < 64 * 1024


async def test_a_retried_attempt_names_the_same_previous_response(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    script = loop_script(4, faults=[Fault.server_error(503)])
    with ScriptedModelServer(script) as server:
        agent = lookup_agent("retried", server)
        result = await wrap(agent, runtime, task_queue).run("look up", **STATE)
        turn1 = [r for r in server.requests if r.turn == 1]

    assert result.final_output == "looked up 3"
    assert [r.status for r in turn1] == [503, 200]
    assert [r.previous_response_id for r in turn1] == ["resp_gpt_test_0"] * 2
    assert turn1[0].body == turn1[1].body


async def test_a_run_resumed_after_a_worker_crash_keeps_chaining(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import weather

    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": s}), delay=0.3)
        for s in ("CA", "NY", "TX")
    ] + [Turn.text("CA has a heat advisory.", delay=0.3)]
    with ScriptedModelServer(script) as server:
        result, _, done_at_kill, _ = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.openai_apps:weather",
            weather,
            "alerts?",
            3,
            **STATE,
        )
        requests = server.requests

    assert result.final_output == "CA has a heat advisory."
    assert any(s.name == "openai_agents.model" for s in done_at_kill)
    assert all(r.status == 200 for r in requests)
    by_turn = {r.turn: r for r in requests}  # a call in flight at the kill may repeat
    assert sorted(by_turn) == [0, 1, 2, 3]
    assert by_turn[0].previous_response_id is None
    # The worker that took over rebuilt the chain from the run's history.
    for t in (1, 2, 3):
        assert by_turn[t].previous_response_id == f"resp_gpt_weather_{t - 1}"
        assert len(input_of(by_turn[t])) == 1


async def test_a_chat_completions_model_gets_whole_requests(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(loop_script(3)) as server:
        agent = lookup_agent("chatty", server, chat=True)
        result = await wrap(agent, runtime, task_queue).run("look up", **STATE)
        requests = server.requests

    assert result.final_output == "looked up 2"
    assert [r.endpoint for r in requests] == ["chat"] * 3
    assert len(requests[-1].body["messages"]) == 6  # system, user, 2 x (call, output)


async def test_the_option_is_checked_at_start(runtime: Runtime, task_queue: str) -> None:
    with ScriptedModelServer(loop_script(2)) as server:
        durable = wrap(lookup_agent("checked", server), runtime, task_queue)
        with pytest.raises(ConfigurationError, match="auto_previous_response_id"):
            await durable.start("x", auto_previous_response_id="yes")


# -- Pydantic AI: its own setting, openai_previous_response_id="auto" -----------------------


def pai_agent(name: str, server: ScriptedModelServer, expire_at: int | None = None) -> Any:
    from pydantic_ai import Agent as PaiAgent
    from pydantic_ai.models.openai import OpenAIResponsesModel as PaiResponses
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=server.base_url, api_key="t")
    agent = PaiAgent(
        PaiResponses("gpt-test", provider=provider),
        name=name,
        model_settings={"openai_previous_response_id": "auto"},  # type: ignore[typeddict-unknown-key]
    )

    @agent.tool_plain
    def lookup(i: int) -> str:
        """A record."""
        if i == expire_at:
            server.expire_responses()
        return f"record {i}: " + "x" * 2000

    return agent


async def test_pydantic_ai_auto_setting_sends_only_new_messages(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(loop_script(30)) as server:
        durable = wrap(pai_agent("pai-chained", server), runtime, task_queue)
        result = await durable.run("look up")
        chained = served(server)

    assert result.output == "looked up 29"
    assert [r.turn for r in chained] == list(range(30))
    assert chained[0].previous_response_id is None
    assert [r.previous_response_id for r in chained[1:]] == [
        f"resp_gpt_test_{t}" for t in range(29)
    ]
    assert abs(chained[29].size - chained[4].size) < 0.05 * chained[4].size


async def test_pydantic_ai_lost_state_falls_back_to_the_whole_history(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(loop_script(6)) as server:
        durable = wrap(pai_agent("pai-expiring", server, expire_at=2), runtime, task_queue)
        handle = await durable.start("look up")
        result = await handle.result()
        events = await all_events(handle)
        requests = server.requests

    assert result.output == "looked up 5"
    assert [r.previous_response_id for r in requests if r.status == 400] == ["resp_gpt_test_2"]
    ok = [r for r in requests if r.status == 200]
    assert [r.turn for r in ok] == list(range(6))
    assert ok[3].previous_response_id is None and len(input_of(ok[3])) == 7
    # The whole request's response is stored with all of that history: the chain goes on
    # from it at once, each request sending the two messages after the previous response.
    assert ok[4].previous_response_id == "resp_gpt_test_3" and len(input_of(ok[4])) == 1
    assert ok[5].previous_response_id == "resp_gpt_test_4" and len(input_of(ok[5])) == 1
    [fallback] = [e for e in events if e.type == "model.state_fallback"]
    assert fallback.data["fallback"] == "full"


async def test_pydantic_ai_chain_goes_on_across_continue_as_new(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    """Each segment's first request continues the response the previous segment stored:
    the run carries which response that is (a request whose history a worker did not read
    whole has no digest Pydantic AI could match), so no request is sent whole again."""
    with ScriptedModelServer(loop_script(10)) as server:
        durable = wrap(pai_agent("pai-continued", server), runtime, task_queue)
        handle = await durable.start("look up", continue_as_new=tether.ContinueAsNew(every_steps=4))
        result = await handle.result()
        raw = await handle.raw_result()
        chained = served(server)

    assert result.output == "looked up 9"
    assert raw.segments >= 3
    assert [r.turn for r in chained] == list(range(10))
    assert chained[0].previous_response_id is None
    for before, req in itertools.pairwise(chained):
        assert req.previous_response_id == f"resp_gpt_test_{before.turn}"
        assert [item["type"] for item in input_of(req)] == ["function_call_output"]
    assert len(result.all_messages()) == 20


def test_pydantic_ai_history_with_a_part_read_further_back_is_sent_whole() -> None:
    """A part that Pydantic AI reads past the last stored response (here a compaction, as
    a settings change or an instruction baseline would be) ends chaining for the run: its
    requests go out whole, Pydantic AI deciding what to send."""
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.messages import ToolReturnPart as Return

    from tether.adapters.pydantic_ai._workflow_side import MessagesJson, StreamState

    settings: Any = {"openai_previous_response_id": "auto"}
    as_json = MessagesJson()
    streams = StreamState(tail_only=True)
    messages: list[Any] = [ModelRequest.user_text_prompt("go")]
    for turn in range(3):
        transcript = as_json(messages)
        chain = streams.continued(messages, transcript, settings, 0)
        assert (chain is None) == (turn == 0)
        response = ModelResponse(
            parts=[ToolCallPart("lookup", {"i": turn}, tool_call_id=f"c{turn}")],
            provider_response_id=f"resp_{turn}",
        )
        streams.answered(transcript, response, settings, 0)
        messages += [response, ModelRequest(parts=[Return("lookup", "r", tool_call_id=f"c{turn}")])]

    compacted = ModelResponse(parts=[TextPart("x")], provider_response_id="resp_c")
    dumped = as_json([*messages, compacted])
    dumped[-1]["parts"][0]["part_kind"] = "compaction"  # as a compaction response is stored
    messages.append(compacted)
    streams.answered(dumped[:-1], compacted, settings, 0)
    messages.append(ModelRequest.user_text_prompt("more"))
    assert streams.continued(messages, [*dumped, {"parts": []}], settings, 0) is None
    assert not streams.chainable
    # Not for an agent whose loop may rewrite its history, nor without the setting.
    assert StreamState().continued(messages, as_json(messages), settings, 0) is None
    assert streams.continued(messages, as_json(messages), {}, 0) is None
