"""`durable.run_streamed`: the Agents SDK's own stream events from a durable run, equal to a
plain `Runner.run_streamed` on the same script, through worker kills and reattaching readers."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from agents.stream_events import StreamEvent
from openai import AsyncOpenAI
from temporalio.worker import Worker

import tether
from tether.core.runtime import Runtime, agent_queue
from tether.testing import ScriptedModelServer, ToolCall, Turn, WorkerProcess, worker_processes
from workers import steps_ended, wait_until_polling

TEXT = "California has a heat advisory; New York and Texas are quiet today, all day long."


def model(server: ScriptedModelServer, lane: str) -> OpenAIResponsesModel:
    client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    return OpenAIResponsesModel(model=lane, openai_client=client)


def handoff_agents(server: ScriptedModelServer, suffix: str) -> Agent[Any]:
    @function_tool
    def get_weather_alerts(state: str) -> str:
        """Active weather alerts for a US state."""
        return f"alerts for {state}: heat advisory"

    specialist = Agent(
        name=f"specialist-{suffix}",
        instructions="You answer alert questions.",
        tools=[get_weather_alerts],
        model=model(server, "gpt-specialist"),
    )
    return Agent(
        name=f"triage-{suffix}",
        instructions="Hand off to the specialist.",
        handoffs=[specialist],
        model=model(server, "gpt-triage"),
    )


def handoff_script(suffix: str) -> dict[str, Any]:
    return {
        "gpt-triage": [Turn.tool_calls(ToolCall(f"transfer_to_specialist_{suffix}", {}))],
        "gpt-specialist": {
            1: Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
            2: Turn.text(TEXT),
        },
    }


def shape(event: Any) -> tuple[Any, ...]:
    """What a chat UI reads of one event: its type and content (agents by name)."""
    kind = event.type
    if kind == "raw_response_event":
        return (kind, event.data.model_dump(mode="json"))
    if kind == "run_item_stream_event":
        raw = event.item.raw_item
        dumped = raw.model_dump(mode="json") if hasattr(raw, "model_dump") else raw
        return (kind, event.name, type(event.item).__name__, event.item.agent.name, dumped)
    if kind == "agent_updated_stream_event":
        return (kind, event.new_agent.name)
    return (kind, event.step, event.attempt)  # StreamRetracted


async def plain_events(agent: Agent[Any], prompt: str, server: ScriptedModelServer) -> list[Any]:
    result = Runner.run_streamed(agent, prompt)
    events = [e async for e in result.stream_events()]
    server.reset()
    return [*events, result.final_output]


async def test_run_streamed_yields_the_sdks_events_in_the_plain_runs_order(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    suffix = uuid.uuid4().hex[:6]
    with ScriptedModelServer(handoff_script(suffix)) as server:
        agent = handoff_agents(server, suffix)
        *plain, plain_output = await plain_events(agent, "alerts?", server)
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        result = durable.run_streamed("alerts?")
        events: list[StreamEvent] = [e async for e in result.stream_events()]
        assert all(r.stream for r in server.requests)
        assert server.count() == 3  # each model call made once
    assert [shape(e) for e in events] == [shape(e) for e in plain]
    kinds = {shape(e)[:2] for e in events if e.type != "raw_response_event"}
    assert ("run_item_stream_event", "handoff_occured") in kinds
    assert ("run_item_stream_event", "tool_output") in kinds
    deltas = [
        e.data.delta
        for e in events
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]
    assert "".join(deltas) == TEXT and len(deltas) > 3
    assert result.is_complete and result.final_output == plain_output == TEXT
    assert result.last_agent is not None and result.last_agent.name == f"specialist-{suffix}"
    assert len(result.raw_responses) == 3

    # Replayed from the finished run's log: the same events.
    assert result.run_id is not None
    again = [e async for e in durable.handle(result.run_id, runtime).stream_events()]
    assert [shape(e) for e in again] == [shape(e) for e in events]


async def test_a_reattaching_reader_sees_every_event_exactly_once(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    suffix = uuid.uuid4().hex[:6]
    with ScriptedModelServer(handoff_script(suffix)) as server:
        agent = handoff_agents(server, suffix)
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        result = durable.run_streamed("alerts?")
        seen: list[Any] = []
        async for event in result.stream_events():
            seen.append(event)
            if len(seen) == 12:
                break  # the reader goes away mid-run
        assert result.run_id is not None
        offset = result.next_offset
        # A new reader, from the run's id alone (the agent is registered here).
        stream = (await tether.get_run(result.run_id, runtime)).stream_events(from_offset=offset)
        while True:
            try:
                seen.append(await stream.__anext__())
            except StopAsyncIteration:
                break
            if len(seen) == 30:
                offset = stream.next_offset
                stream = (await tether.get_run(result.run_id, runtime)).stream_events(
                    from_offset=offset
                )
        whole = [e async for e in durable.handle(result.run_id, runtime).stream_events()]
    assert len(seen) > 30
    assert [shape(e) for e in seen] == [shape(e) for e in whole]


@pytest.mark.timeout(600)  # worker subprocesses start slowly on a loaded machine
async def test_run_streamed_survives_a_worker_killed_mid_stream(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import weather

    long_text = " ".join(f"word{i}" for i in range(300))
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text(long_text),
    ]
    # Paced pieces: the stream lasts seconds, so the kill lands inside it.
    with ScriptedModelServer(script, piece_delay=0.02) as server:
        from agents import set_default_openai_client

        set_default_openai_client(AsyncOpenAI(base_url=server.base_url, api_key="t"), False)
        *plain, plain_output = await plain_events(weather, "alerts?", server)
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        durable = tether.durable(weather, runtime=runtime, local_worker=False)
        durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
        with worker_processes() as procs:
            first = WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w1.log")
            procs.append(first)
            await wait_until_polling(runtime.client, durable.task_queue, timeout=300)
            result = durable.run_streamed("alerts?")
            events: list[Any] = []
            texts = 0
            async for event in result.stream_events():
                events.append(event)
                if event.type == "raw_response_event" and event.data.type.endswith("text.delta"):
                    texts += 1
                    if texts == 5 and first.alive():
                        first.kill()  # mid-stream: the step's attempt dies with its worker
                        procs.append(
                            WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w2.log")
                        )
        assert server.count("gpt-weather", 1) == 2  # the text step was made again
    # The retry streamed the same reply: it continues where the dead attempt stopped, so
    # the reader sees exactly the plain run's events, nothing twice, nothing retracted.
    assert [shape(e) for e in events] == [shape(e) for e in plain]
    assert result.final_output == plain_output == long_text


@pytest.mark.timeout(600)  # worker subprocesses start slowly on a loaded machine
async def test_follow_against_a_server_that_does_not_stream_completes_showing_each_step(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    script = [Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})), Turn.text("CA!")]
    with ScriptedModelServer(script, streaming=False) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        procs.append(WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w.log"))
        await wait_until_polling(
            runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "weather"), timeout=300
        )
        run_id = f"follow-{uuid.uuid4().hex[:6]}"
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "tether.cli",
                "run",
                "apps.openai_apps:weather",
                "alerts?",
                *(
                    "--id",
                    run_id,
                    "--follow",
                ),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert proc.returncode == 0, proc.stderr
        # Asked to stream once; the provider did not, so the step fell back to a plain
        # request and the run's next model step did not ask again.
        assert [r.stream for r in server.requests] == [True, False, False]
        assert server.count() == 3
        events = [e async for e in (await tether.get_run(run_id, runtime)).events()]
    out = proc.stdout + proc.stderr
    assert "model did not stream" in out
    assert out.count("model: weather finished") == 2 and "tool: get_weather_alerts finished" in out
    assert proc.stdout.strip().endswith("CA!")
    kinds = [e.type for e in events]
    assert kinds.count("model.unstreamed") == 1 and "model.failed" not in kinds


@pytest.mark.timeout(600)  # worker subprocesses start slowly on a loaded machine
async def test_a_retry_that_streams_a_different_reply_retracts_the_dead_attempts_text(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import weather
    from tether.testing import RecordedRequest

    first_text = " ".join(f"first{i}" for i in range(300))
    second_text = " ".join(f"second{i}" for i in range(60))

    def reply(request: RecordedRequest) -> Turn:
        if request.turn == 0:
            return Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}))
        return Turn.text(first_text if request.attempt == 1 else second_text)

    with ScriptedModelServer(responder=reply, piece_delay=0.02) as server:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        durable = tether.durable(weather, runtime=runtime, local_worker=False)
        durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
        with worker_processes() as procs:
            first = WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w1.log")
            procs.append(first)
            await wait_until_polling(runtime.client, durable.task_queue, timeout=300)
            result = durable.run_streamed("alerts?")
            events: list[Any] = []
            async for event in result.stream_events():
                events.append(event)
                if (
                    event.type == "raw_response_event"
                    and event.data.type.endswith("text.delta")
                    and first.alive()
                ):
                    first.kill()  # at the first piece: the attempt dies mid-stream
                    procs.append(
                        WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w2.log")
                    )
            assert result.run_id is not None
            replayed = [e async for e in durable.handle(result.run_id, runtime).stream_events()]
    [retracted] = [e for e in events if isinstance(e, tether.StreamRetracted)]
    assert retracted.step == 3 and retracted.attempt == 1
    assert retracted.text and first_text.startswith(retracted.text)
    after = events[events.index(retracted) + 1 :]
    shown_after = "".join(
        e.data.delta
        for e in after
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    )
    assert shown_after == second_text  # the new attempt, from its start
    assert after[0].type == "raw_response_event" and after[0].data.type == "response.created"
    assert result.final_output == second_text
    # Replaying the finished run shows the same: the dead attempt, its retraction, the retry.
    assert [shape(e) for e in replayed] == [shape(e) for e in events]


async def test_run_streamed_with_an_approval_waits_durably_and_streams_on(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    from hitl_helpers import build_agent, wait_pending

    ran: list[int] = []

    def refund(order: int) -> str:
        """Refund an order."""
        ran.append(order)
        return "refunded"

    script = [Turn.tool_calls(ToolCall("refund", {"order": 7})), Turn.text("Order 7 refunded.")]
    with ScriptedModelServer(script) as server:
        agent = build_agent(
            "openai_agents",
            server,
            f"refunds-{uuid.uuid4().hex[:6]}",
            {"refund": refund},
            approval=("refund",),
        )
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        result = durable.run_streamed("refund 7")
        events: list[Any] = []

        async def approve_when_asked() -> None:
            handle = await result.started()
            [request] = await wait_pending(handle)
            await handle.approve(request.id)

        approver = asyncio.create_task(approve_when_asked())
        async for event in result.stream_events():
            events.append(event)
        await approver
    names = [e.name for e in events if e.type == "run_item_stream_event"]
    assert names == ["tool_called", "tool_output", "message_output_created"]
    assert ran == [7] and result.final_output == "Order 7 refunded."


async def test_cancel_ends_the_stream_and_the_run(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    from tether.testing import Fault

    suffix = uuid.uuid4().hex[:6]
    script = handoff_script(suffix)
    # The specialist's tool turn hangs at the provider: the run is mid-step when cancelled.
    script["gpt-specialist"][1] = Turn.tool_calls(
        ToolCall("get_weather_alerts", {"state": "CA"}), faults=[Fault.hang(60)]
    )
    with ScriptedModelServer(script) as server:
        durable = tether.durable(
            handoff_agents(server, suffix),
            runtime=runtime,
            task_queue=task_queue,
            local_worker=False,
        )
        result = durable.run_streamed("alerts?")
        events: list[Any] = []
        async for event in result.stream_events():
            events.append(event)
            if event.type == "agent_updated_stream_event" and len(events) > 1:
                await result.cancel()  # once the handoff happened
        handle = await result.started()
        description = await handle.describe()
    # The server's exit answered the held request: the cancelled run's step ends here, not
    # while the worker shuts down after the test (a step ending during a worker's shutdown
    # once held the engine's worker shutdown for minutes).
    await steps_ended()
    assert description.status == "cancelled"
    assert result.is_complete and result.final_output is None
    assert events[-1].type == "agent_updated_stream_event"
