"""Run events: published by the run, in order, once each (also when a step is retried or
the run is replayed), and resumable from an offset."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.worker import Worker

import tether
from hitl_helpers import ADAPTERS, all_events, build_agent, output_of, wait_pending, wrap
from tether.core.runtime import Runtime
from tether.testing import Fault, ScriptedModelServer, ToolCall, Turn, Usage


def three_tool_agent(adapter: str, server: ScriptedModelServer, ran: list[str]) -> object:
    def lookup(state: str) -> str:
        """Weather alerts for a state (NY's first attempt fails)."""
        ran.append(state)
        if state == "NY" and ran.count("NY") == 1:
            raise ConnectionError("weather service unreachable")
        return f"{state}: quiet"

    return build_agent(adapter, server, f"events-{adapter}", {"lookup": lookup})


def three_tool_script() -> list[Turn]:
    return [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"})),
        # The model call of turn 1 fails once at the provider: the step is retried.
        Turn.tool_calls(ToolCall("lookup", {"state": "NY"}), faults=[Fault.rate_limit(0.1)]),
        Turn.tool_calls(ToolCall("lookup", {"state": "TX"})),
        Turn.text("all quiet"),
    ]


EXPECTED = (
    ["run.started"]
    + [
        "model.started",
        "model.finished",
        "model.response",
        "usage",
        "tool.started",
        "tool.finished",
    ]
    * 3
    + ["model.started", "model.finished", "model.response", "usage", "run.finished"]
)


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_three_tool_run_events_arrive_in_order_once_each_despite_retries(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    ran: list[str] = []
    with ScriptedModelServer(three_tool_script()) as server:
        handle = await wrap(three_tool_agent(adapter, server, ran), runtime, task_queue).start(
            "alerts?"
        )
        live = await all_events(handle)  # subscribed while the run runs, ends with it
        assert output_of(await handle.result()) == "all quiet"
        assert server.count() == 5  # four turns, one of them attempted twice
    assert ran == ["CA", "NY", "NY", "TX"]  # the NY tool step was retried
    assert [e.type for e in live] == EXPECTED
    assert [e.offset for e in live] == list(range(len(EXPECTED)))
    tools = [
        (e.type, e.data["tool"], e.data.get("attempt")) for e in live if e.type.startswith("tool.")
    ]
    assert tools == [
        ("tool.started", "lookup", None),
        ("tool.finished", "lookup", 1),
        ("tool.started", "lookup", None),
        ("tool.finished", "lookup", 2),
        ("tool.started", "lookup", None),
        ("tool.finished", "lookup", 1),
    ]
    model_attempts = [e.data["attempt"] for e in live if e.type == "model.finished"]
    assert model_attempts == [1, 2, 1, 1]
    assert live[-3].data["text"] == "all quiet"
    # Read again after the end (the run is replayed to answer): the same log, nothing twice.
    assert await all_events(handle) == live


async def test_a_reader_that_reconnects_with_its_last_offset_misses_nothing(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[int] = []

    def refund(order: int) -> str:
        """Refund an order."""
        ran.append(order)
        return "refunded"

    script = [Turn.tool_calls(ToolCall("refund", {"order": 7})), Turn.text("done")]
    with ScriptedModelServer(script) as server:
        agent = build_agent(
            "openai_agents", server, "reader", {"refund": refund}, approval=("refund",)
        )
        handle = await wrap(agent, runtime, task_queue).start("refund 7")
        first: list[tether.RunEvent] = []
        async for event in handle.events():
            first.append(event)
            if event.type == "approval.requested":
                break  # the reader goes away while the run waits
        [request] = await wait_pending(handle)
        assert first[-1].data["id"] == request.id
        await handle.approve(request.id)
        rest = await all_events(handle, after=first[-1].offset)
        assert output_of(await handle.result()) == "done"
        whole = await all_events(handle)
    assert first + rest == whole
    assert [e.offset for e in whole] == list(range(len(whole)))
    assert [e.type for e in rest][:3] == ["approval.answered", "tool.started", "tool.finished"]
    assert whole[-1].type == "run.finished"


async def test_a_failed_run_ends_its_events_with_the_failure(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer([Turn.text("hi", faults=[Fault.server_error(400)])]) as server:
        agent = build_agent("pydantic_ai", server, "failing", {})
        handle = await wrap(agent, runtime, task_queue).start("hi")
        events = await asyncio.wait_for(all_events(handle), 30)
        with pytest.raises(tether.RunFailedError):
            await handle.result()
    assert [e.type for e in events] == [
        "run.started",
        "model.started",
        "model.failed",
        "run.failed",
    ]
    assert "400" in events[-1].data["error"]


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_streamed_text_arrives_as_deltas_before_the_response(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    text = "California has a heat advisory; New York and Texas are quiet today."
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"}), usage=Usage(100, 10)),
        Turn.text(text, usage=Usage(200, 20), faults=[Fault.rate_limit(0.1)]),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent(adapter, server, f"streamer-{adapter}", {"lookup": lambda state: "q"})
        handle = await wrap(agent, runtime, task_queue).start("alerts?", stream_text=True)
        live = await all_events(handle)
        assert output_of(await handle.result()) == text
        assert all(r.stream for r in server.requests)
    deltas = [e for e in live if e.type == "model.delta"]
    assert "".join(e.data["text"] for e in deltas) == text
    assert len(deltas) > 3  # the server streams 16-character pieces
    # The text's step: its deltas (from its second attempt) come after the step started and
    # before it finished and before the run's authoritative response.
    started = next(e for e in live if e.type == "model.started" and e.data["step"] == 3)
    finished = next(e for e in live if e.type == "model.finished" and e.data["step"] == 3)
    assert finished.data["attempt"] == 2
    assert {(e.data["step"], e.data["attempt"]) for e in deltas} == {(3, 2)}
    assert started.offset < deltas[0].offset and deltas[-1].offset < finished.offset
    response = next(e for e in live if e.type == "model.response" and e.data["text"])
    assert response.data["text"] == text
    assert [e.offset for e in live] == list(range(len(live)))
    assert await all_events(handle) == live  # replayed from history: the same log
    assert (await handle.usage()).total_tokens == 330


def _delta(offset: int, step: int, attempt: int, text: str) -> tether.RunEvent:
    data = {"step": step, "attempt": attempt, "text": text, "raw": {"t": text}}
    return tether.RunEvent(offset, "model.delta", "", data)


def test_a_retry_that_repeats_the_dead_attempt_continues_and_one_that_differs_is_retracted() -> (
    None
):
    from tether.core.events import AttemptFilter, StreamRetracted

    same = AttemptFilter()
    shown = [same.feed(e) for e in [_delta(0, 1, 1, "He"), _delta(1, 1, 1, "llo")]]
    shown += [same.feed(e) for e in [_delta(2, 1, 2, "He"), _delta(3, 1, 2, "llo")]]
    shown += [same.feed(_delta(4, 1, 2, " you"))]
    texts = [e.data["text"] for batch in shown for e in batch if isinstance(e, tether.RunEvent)]
    assert texts == ["He", "llo", " you"]  # nothing twice, nothing retracted

    other = AttemptFilter()
    out = [x for e in [_delta(0, 1, 1, "He"), _delta(1, 1, 1, "llo")] for x in other.feed(e)]
    out += other.feed(_delta(2, 1, 2, "He"))  # matches so far: held back
    assert len(out) == 2
    out += other.feed(_delta(3, 1, 2, "y"))  # differs: retract, then the retry from its start
    assert isinstance(out[2], StreamRetracted) and out[2].text == "Hello" and out[2].step == 1
    assert [e.data["text"] for e in out[3:] if isinstance(e, tether.RunEvent)] == ["He", "y"]
    # A retry that stops short of what was shown is retracted when its step finishes.
    short = AttemptFilter()
    for e in [_delta(0, 2, 1, "a"), _delta(1, 2, 1, "b"), _delta(2, 2, 2, "a")]:
        short.feed(e)
    end = short.feed(tether.RunEvent(3, "model.finished", "", {"step": 2, "attempt": 2}))
    assert isinstance(end[0], StreamRetracted) and end[1].data["text"] == "a"
    # A step that fails for good: what it streamed is retracted, nothing else is shown.
    failed = AttemptFilter()
    failed.feed(_delta(0, 4, 1, "partial"))
    gone = failed.feed(tether.RunEvent(1, "model.failed", "", {"step": 4, "error": "x"}))
    assert len(gone) == 1 and isinstance(gone[0], StreamRetracted)
    assert gone[0].text == "partial" and gone[0].step == 4
    # A step that finished normally retracts nothing.
    fine = AttemptFilter()
    fine.feed(_delta(0, 5, 1, "ok"))
    assert fine.feed(tether.RunEvent(1, "model.finished", "", {"step": 5, "attempt": 1})) == []
