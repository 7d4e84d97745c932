"""Pydantic AI's streaming APIs on a durable run: `run_stream_events`, `run_stream`
(`stream_text`, `stream_output`) and `event_stream_handler`, equal to the plain run's on the
same script, through a worker killed mid-stream."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, TypeAdapter
from pydantic_ai import Agent
from pydantic_ai.messages import AgentStreamEvent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio.worker import Worker

import tether
from tether.core.runtime import Runtime, agent_queue
from tether.testing import ScriptedModelServer, ToolCall, Turn, WorkerProcess, worker_processes
from workers import wait_until_polling

TEXT = "California has a heat advisory; New York and Texas are quiet today, all day long."
_events: TypeAdapter[AgentStreamEvent] = TypeAdapter(AgentStreamEvent)


class Answer(BaseModel):
    summary: str
    states: list[str]


def chat_model(server: ScriptedModelServer, lane: str = "gpt-pai-stream") -> OpenAIChatModel:
    client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    return OpenAIChatModel(lane, provider=OpenAIProvider(openai_client=client))


def weather_agent(server: ScriptedModelServer, output_type: Any = str) -> Agent[None, Any]:
    agent = Agent(
        chat_model(server), name=f"pai-stream-{uuid.uuid4().hex[:6]}", output_type=output_type
    )

    @agent.tool_plain
    def lookup(state: str) -> str:
        """Weather alerts for a state."""
        return f"{state}: heat advisory"

    return agent


def script() -> list[Turn]:
    return [Turn.tool_calls(ToolCall("lookup", {"state": "CA"})), Turn.text(TEXT)]


def shape(event: Any) -> Any:
    kind = getattr(event, "event_kind", getattr(event, "type", None))
    if kind in ("function_tool_call", "function_tool_result"):
        return (kind, event.part.tool_name, event.part.tool_call_id)
    if kind == "stream_retracted":
        return (kind, event.step)
    return _events.dump_python(event, mode="json")


def comparable(events: list[Any]) -> list[Any]:
    """The events compared one to one (the final AgentRunResultEvent carries a result object:
    its output is compared separately)."""
    return [shape(e) for e in events if getattr(e, "event_kind", None) != "agent_run_result"]


async def test_run_stream_events_equal_the_plain_runs(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(script()) as server:
        agent = weather_agent(server)
        async with agent.run_stream_events("alerts?") as stream:
            plain = [e async for e in stream]
        server.reset()
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with durable.run_stream_events("alerts?") as stream:
            events = [e async for e in stream]
        assert all(r.stream for r in server.requests) and server.count() == 2
        # Replayed from the finished run's log, from the start and from an offset.
        assert stream.handle is not None
        replay = durable.handle(stream.handle.id, runtime).stream_events()
        again = [e async for e in replay]
        tail = [e async for e in durable.handle(stream.handle.id, runtime).stream_events(5)]
    assert comparable(events) == comparable(plain)
    assert comparable(again) == comparable(events[:-1])
    assert replay.next_offset > 5
    assert again[-len(tail) :] == tail  # the log from offset 5 on: a suffix, nothing twice
    assert 0 < len(tail) < len(again)
    kinds = [getattr(e, "event_kind", None) for e in events]
    assert "function_tool_call" in kinds and "function_tool_result" in kinds
    assert kinds[-1] == "agent_run_result" and events[-1].result.output == TEXT


async def test_run_stream_text_and_output(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    answer = {"summary": "heat in California", "states": ["CA", "NY"]}
    with ScriptedModelServer(script()) as server:
        durable = tether.durable(
            weather_agent(server), runtime=runtime, task_queue=task_queue, local_worker=False
        )
        async with durable.run_stream("alerts?") as result:
            texts = [t async for t in result.stream_text()]
        assert texts[-1] == TEXT and len(texts) > 3
        assert all(TEXT.startswith(t) for t in texts)  # cumulative, growing
        assert await result.get_output() == TEXT
    structured = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"})),
        Turn.tool_calls(ToolCall("final_result", answer)),
    ]
    with ScriptedModelServer(structured) as server:
        durable = tether.durable(
            weather_agent(server, Answer),
            runtime=runtime,
            task_queue=task_queue,
            local_worker=False,
        )
        async with durable.run_stream("alerts?") as result:
            outputs = [o async for o in result.stream_output()]
    assert outputs[-1] == Answer(**answer)


async def test_event_stream_handler_runs_in_the_caller_per_step(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(script()) as server:
        agent = weather_agent(server)
        plain_groups: list[list[Any]] = []

        async def plain_handler(ctx: Any, stream: Any) -> None:
            plain_groups.append([e async for e in stream])

        plain = await agent.run("alerts?", event_stream_handler=plain_handler)
        server.reset()
        groups: list[list[Any]] = []

        async def handler(ctx: Any, stream: Any) -> None:
            groups.append([e async for e in stream])

        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        result = await durable.run("alerts?", event_stream_handler=handler)
    assert result.output == plain.output == TEXT
    plain_nonempty = [comparable(g) for g in plain_groups if comparable(g)]
    assert [comparable(g) for g in groups] == plain_nonempty


@pytest.mark.timeout(600)  # worker subprocesses start slowly on a loaded machine
async def test_run_stream_events_survive_a_worker_killed_mid_stream(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.pydantic_apps import Deps, weather

    long_text = " ".join(f"word{i}" for i in range(300))
    turns = [Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})), Turn.text(long_text)]
    with ScriptedModelServer(turns, piece_delay=0.02) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        # What the worker infers from "openai:gpt-pai-weather".
        model = OpenAIResponsesModel(
            "gpt-pai-weather", provider=OpenAIProvider(openai_client=client)
        )
        async with weather.run_stream_events("alerts?", deps=Deps("ann"), model=model) as ps:
            plain = [e async for e in ps]
        server.reset()
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        durable = tether.durable(weather, runtime=runtime, local_worker=False)
        durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
        events: list[Any] = []
        with worker_processes() as procs:
            first = WorkerProcess(["apps.pydantic_apps:weather"], env, tmp_path / "w1.log")
            procs.append(first)
            await wait_until_polling(runtime.client, durable.task_queue, timeout=300)
            texts = 0
            async for event in durable.run_stream_events("alerts?", deps=Deps("ann")).__aiter__():
                events.append(event)
                if getattr(event, "event_kind", None) == "part_delta":
                    texts += 1
                    if texts == 5 and first.alive():
                        first.kill()
                        procs.append(
                            WorkerProcess(["apps.pydantic_apps:weather"], env, tmp_path / "w2.log")
                        )
        assert server.count("gpt-pai-weather", 1) == 2  # the text step was made again
    assert comparable(events) == comparable(plain)
    assert events[-1].result.output == long_text


async def test_iter_yields_the_plain_runs_nodes(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(script()) as server:
        agent = weather_agent(server)
        async with agent.iter("alerts?") as plain_run:
            plain = [type(node).__name__ async for node in plain_run]
        server.reset()
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with durable.iter("alerts?") as run:
            nodes = [node async for node in run]
        assert run.result is not None and run.result.output == TEXT
    names = [type(n).__name__ for n in nodes]
    assert names == [n for n in plain if n != "SetFinalResult"]
    assert names[0] == "UserPromptNode" and names[-1] == "End"
    assert nodes[-1].data.output == TEXT


async def test_a_provider_that_does_not_stream_falls_back_to_a_plain_request_once(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer(script(), streaming=False) as server:
        durable = tether.durable(
            weather_agent(server), runtime=runtime, task_queue=task_queue, local_worker=False
        )
        async with durable.run_stream("alerts?") as result:
            texts = [t async for t in result.stream_text()]
            assert await result.get_output() == TEXT
        assert [r.stream for r in server.requests] == [True, False, False]
        events = [e async for e in result.handle.events()]
    assert texts == []  # nothing streamed live; the output is whole
    kinds = [e.type for e in events]
    assert kinds.count("model.unstreamed") == 1 and "model.failed" not in kinds
    assert kinds.count("model.finished") == 2
    assert all(e.data["attempt"] == 1 for e in events if e.type == "model.finished")
