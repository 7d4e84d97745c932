"""Long runs continue as new: one run (id, result, events, usage, approvals) across
segments, with small segment inputs, and a SIGKILL right after a boundary costs nothing.

The acceptance test of issue 13: a 31-step run (15 tool turns and an answer) forced to
continue as new every 5 steps, for both built-in adapters and the example adapter, its worker
SIGKILLed right after a boundary: same output as the plain run, every completed model and
tool call made exactly once, one run id, the events from offset 0 complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

import tether
from hitl_helpers import build_agent, wait_pending, wrap  # imports both frameworks
from tether import ContinueAsNew
from tether.core import ops
from tether.core.contract import RunRequest
from tether.core.run import SEGMENTS_QUERY as SEGMENTS
from tether.core.run import STATUS_RECENT
from tether.core.runtime import Runtime, agent_queue
from tether.testing import ScriptedModelServer, ToolCall, Turn, WorkerProcess, worker_processes
from workers import DELAY, executed

TOOL_TURNS = 15  # 15 tool turns and a final answer: 31 steps
EVERY = 5
SPECS = {
    "openai_agents": "apps.long_apps:openai_long",
    "pydantic_ai": "apps.long_apps:pydantic_long",
    "rawloop": "apps.long_apps:rawloop_long",
}


def long_script(n: int = TOOL_TURNS, delay: float = 0.0) -> list[Turn]:
    turns = [Turn.tool_calls(ToolCall("lookup", {"key": f"k{i}"}), delay=delay) for i in range(n)]
    return [*turns, Turn.text("done: " + ",".join(f"k{i}" for i in range(n)), delay=delay)]


@pytest.fixture
def model_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedModelServer]:
    """The scripted model server, named by OPENAI_BASE_URL (the agents' default client)."""
    with ScriptedModelServer(long_script()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


@pytest.fixture
def adapter(request: pytest.FixtureRequest) -> Iterator[str]:
    """The adapter under test; the example's plugin is registered for its tests only (before
    the in-process worker starts, so that the worker runs its steps)."""
    name = str(request.param)
    if name != "rawloop":
        yield name
        return
    from apps import long_apps
    from tether import plugins

    long_apps.rawloop_agent()
    try:
        yield name
    finally:
        plugins._extra[:] = [p for p in plugins._extra if p not in long_apps._registered]
        long_apps._registered.clear()
        plugins.installed.cache_clear()


def agent_for(adapter: str) -> Any:
    from apps import long_apps

    if adapter == "openai_agents":
        return long_apps.openai_long
    if adapter == "pydantic_ai":
        # A model object of its own: the module's agent read another test's server address.
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        provider = OpenAIProvider(base_url=os.environ["OPENAI_BASE_URL"], api_key="t")
        return long_apps.pydantic_agent(OpenAIChatModel("gpt-long", provider=provider))
    return long_apps.rawloop_agent()


def conversations(server: ScriptedModelServer) -> list[Any]:
    """What each model request the server answered held of the conversation."""
    return [r.body.get("input", r.body.get("messages")) for r in server.requests if r.status == 200]


async def plain_output(
    adapter: str, agent: Any, server: ScriptedModelServer, sent: list[Any] | None = None
) -> Any:
    """The agent run without Tether against the same script (the server is reset after;
    ``sent`` gets the conversations its requests held)."""
    try:
        if adapter == "openai_agents":
            from agents import Runner, set_default_openai_client
            from openai import AsyncOpenAI

            set_default_openai_client(AsyncOpenAI(base_url=server.base_url, api_key="t"), False)
            return (await Runner.run(agent, "go", max_turns=40)).final_output
        if adapter == "pydantic_ai":
            return (await agent.run("go")).output
        from tether_rawloop import run_plain

        return (await run_plain(agent, "go", max_turns=40)).output
    finally:
        if sent is not None:
            sent.extend(conversations(server))
        server.reset()


def output_of(adapter: str, result: Any) -> Any:
    return result.final_output if adapter == "openai_agents" else result.output


def options_for(adapter: str) -> dict[str, Any]:
    return {} if adapter == "pydantic_ai" else {"max_turns": 40}


async def segment_inputs(client: Client, run_id: str) -> list[int]:
    """The input size in bytes of each segment of a run, oldest first (from the engine),
    less the timeline entries it carries: the latest of the earlier segments', at most
    STATUS_RECENT of them whatever the run's length (so the status shows them)."""
    sizes: list[int] = []
    run: str | None = None
    handle = client.get_workflow_handle(run_id)
    history = await handle.fetch_history()
    chain: list[int] = []
    while True:
        started = history.events[0].workflow_execution_started_event_attributes
        [request] = await client.data_converter.decode(started.input.payloads, [RunRequest])
        window = request.carried.timeline_recent if request.carried is not None else []
        assert len(window) <= STATUS_RECENT
        chain.append(started.input.ByteSize() - len(json.dumps(window, separators=(",", ":"))))
        run = started.continued_execution_run_id
        if not run:
            break
        history = await client.get_workflow_handle(run_id, run_id=run).fetch_history()
    sizes = list(reversed(chain))
    return sizes


async def conversation_loads(client: Client, run_id: str) -> int:
    """How many times a run's continued segments read their conversation from the store."""
    from tether.core.steps import TRANSCRIPT_ACTIVITY

    loads, run = 0, None
    while True:
        history = await client.get_workflow_handle(run_id, run_id=run).fetch_history()
        loads += sum(
            e.activity_task_scheduled_event_attributes.activity_type.name == TRANSCRIPT_ACTIVITY
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        )
        started = history.events[0].workflow_execution_started_event_attributes
        run = started.continued_execution_run_id or None
        if run is None:
            return loads


async def check_events(handle: tether.RunHandle, segments: int) -> list[Any]:
    """Every event of the run from offset 0, once each and in order, across its segments."""
    events = [e async for e in handle.events()]
    assert [e.offset for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types.count("run.started") == 1 and types[0] == "run.started"
    assert types.count("run.finished") == 1 and types[-1] == "run.finished"
    assert types.count("run.continued") == segments - 1
    assert types.count("model.started") == TOOL_TURNS + 1
    assert types.count("model.finished") == TOOL_TURNS + 1
    assert types.count("tool.finished") == TOOL_TURNS
    steps = [e.data["step"] for e in events if e.type in ("model.started", "tool.started")]
    assert steps == list(range(1, 2 * TOOL_TURNS + 2))
    return events


@pytest.mark.parametrize("adapter", ["openai_agents", "pydantic_ai", "rawloop"], indirect=True)
async def test_a_long_run_continues_as_new_and_stays_one_run(
    adapter: str, runtime: Runtime, task_queue: str, worker: Any, model_env: ScriptedModelServer
) -> None:
    server = model_env
    agent = agent_for(adapter)
    sent: list[Any] = []
    expected = await plain_output(adapter, agent, server, sent)
    durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
    handle = await durable.start(
        "go", continue_as_new=ContinueAsNew(every_steps=EVERY), **options_for(adapter)
    )
    result = await handle.result()

    assert output_of(adapter, result) == expected
    # Each model call got the whole conversation, as in the plain run, though a continued
    # segment's loop may hold only its tail (the rest stays in the store).
    assert conversations(server) == sent
    if adapter == "pydantic_ai":
        # The result holds the whole history, the segments' tails put back together.
        messages = result.all_messages()
        assert len(messages) == 2 * (TOOL_TURNS + 1)
        parts = [p for m in messages for p in m.parts]
        assert [p.part_kind for p in parts].count("tool-return") == TOOL_TURNS
        assert parts[0].part_kind == "user-prompt" and parts[0].content == "go"
    assert server.steps_seen() == {("gpt-long", t): 1 for t in range(TOOL_TURNS + 1)}
    raw = await handle.raw_result()
    assert raw.steps == 2 * TOOL_TURNS + 1
    # A boundary comes at the first model call after 5 completed steps: every third turn.
    assert raw.segments == 6
    await check_events(handle, raw.segments)
    # The ledger is carried: every model call counted once, across the segments.
    usage = await handle.usage()
    assert usage.requests == TOOL_TURNS + 1
    assert [s.step for s in usage.steps] == list(range(1, 2 * TOOL_TURNS + 2, 2))
    # What crosses is small: a continued segment's input holds the loop's state and
    # references (the conversation stays in the store), so it does not grow with the
    # conversation; it grows only by the carried ledger's entry per model step.
    sizes = await segment_inputs(runtime.client, handle.id)
    assert len(sizes) == raw.segments
    assert sizes[1] < 4_000, sizes
    per_model_step = (sizes[-1] - sizes[1]) / (3 * (raw.segments - 2))
    assert per_model_step < 250, sizes
    # The frameworks' loops resume from the conversation's tail: no segment reads the
    # conversation (Pydantic AI's result reads it once, at the end: it holds all messages);
    # the example's loop loads it whole at each segment.
    loads = await conversation_loads(runtime.client, handle.id)
    expected = {"openai_agents": 0, "pydantic_ai": 1, "rawloop": raw.segments - 1}
    assert loads == expected[adapter]


def timeline_steps(entries: list[dict[str, Any]]) -> list[int]:
    return [int(e["step"]) for e in entries]


async def check_timeline(handle: tether.RunHandle, total: int, recent: int) -> None:
    """The run's timeline is one across its segments: ``describe()`` shows its latest
    ``recent`` entries and the run's total; pages from offset 0 hold every step once, in
    order, numbered 1..total, each with the usage of its own model steps."""
    desc = await handle.describe()
    assert desc.timeline_total == total
    assert timeline_steps(desc.timeline) == list(range(total - recent + 1, total + 1))
    whole = await handle.timeline(0, 1000)
    assert (whole.offset, whole.total) == (0, total)
    assert timeline_steps(whole.entries) == list(range(1, total + 1))
    model_steps = [e["step"] for e in whole.entries if e["kind"] == "model"]
    assert sorted(u.step for u in whole.usage) == model_steps
    # Small pages across the boundaries: the same entries, no gap, no repeat.
    paged: list[dict[str, Any]] = []
    for offset in range(0, total, 4):
        page = await handle.timeline(offset, 4)
        assert (page.offset, page.total) == (offset, total)
        assert sorted(u.step for u in page.usage) == [
            e["step"] for e in page.entries if e["kind"] == "model"
        ]
        paged.extend(page.entries)
    assert paged == whole.entries
    tail = await handle.timeline(total - 2, 10)
    assert timeline_steps(tail.entries) == [total - 1, total]


async def test_the_timeline_is_one_across_segments(
    runtime: Runtime, task_queue: str, worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``describe()`` and ``timeline()`` see the whole run, not its current segment: while it
    waits for an approval after several segments, and once it completed. The status summary
    is cut to 8 entries (more than a segment holds, fewer than the run), so that both the
    carried entries and the earlier segments' own runs are read."""
    from tether.core import handle as handle_module
    from tether.core import run as run_module

    recent = 8
    monkeypatch.setattr(run_module, "STATUS_RECENT", recent)
    monkeypatch.setattr(handle_module, "STATUS_RECENT", recent)
    lookups = 12
    script = [
        *(Turn.tool_calls(ToolCall("lookup", {"key": f"k{i}"})) for i in range(lookups)),
        Turn.tool_calls(ToolCall("refund", {"order": "o-1"})),
        Turn.text("refunded o-1"),
    ]

    def lookup(key: str) -> str:
        return f"value of {key}"

    def refund(order: str) -> str:
        return f"refunded {order}"

    with ScriptedModelServer(script) as server:
        agent = build_agent(
            "openai_agents",
            server,
            "can-timeline",
            {"lookup": lookup, "refund": refund},
            approval=("refund",),
        )
        handle = await wrap(agent, runtime, task_queue).start(
            "go", continue_as_new=ContinueAsNew(every_steps=EVERY), max_turns=40
        )
        pending = await wait_pending(handle, timeout=120)
        # Waiting: 12 lookups (model and tool steps) and the model call asking for a refund.
        segments = await ops.query(runtime.client.get_workflow_handle(handle.id), SEGMENTS)
        assert len(segments) >= 3
        assert segments[-1]["first_entry"] > recent
        await check_timeline(handle, 2 * lookups + 1, recent)
        # The latest entries span a boundary: some are of earlier segments.
        desc = await handle.describe()
        assert min(timeline_steps(desc.timeline)) <= segments[-1]["first_entry"]

        await handle.approve(pending[0].id)
        await handle.result()
        raw = await handle.raw_result()
        total = 2 * lookups + 3
        assert raw.segments >= 3
        # The result holds the latest entries only; the others are read from the segments.
        assert raw.timeline_first > 0
        assert raw.timeline_first + len(raw.timeline) == total
        await check_timeline(handle, total, recent)


async def wait_for_new_segment(
    client: Client, run_id: str, first: str, worker: WorkerProcess, timeout: float = 120
) -> str:
    """Poll until the run continued as new (its latest run id changed); return that id."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    handle = client.get_workflow_handle(run_id)
    while True:
        desc = await handle.describe()
        if desc.run_id != first:
            return desc.run_id
        if not worker.alive():
            raise AssertionError(f"worker died early; log:\n{worker.log.read_text()[-3000:]}")
        if loop.time() > deadline:
            raise AssertionError(f"run {run_id} did not continue as new in {timeout}s")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("adapter", ["openai_agents", "pydantic_ai", "rawloop"])
async def test_sigkill_right_after_a_boundary_repeats_no_completed_call(
    runtime: Runtime,
    worker_env: dict[str, str],
    tmp_path: Path,
    adapter: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ScriptedModelServer(long_script(delay=DELAY)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        agent = agent_for(adapter)
        expected = await plain_output(adapter, agent, server)
        calls = tmp_path / "calls.txt"
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url, TETHER_TEST_CALLS=str(calls))
        env["TETHER_TEST_TOOL_DELAY"] = str(DELAY)
        durable = tether.durable(agent, runtime=runtime, local_worker=False)
        durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
        spec = SPECS[adapter]
        with worker_processes() as procs:
            first = WorkerProcess([spec], env, tmp_path / "w1.log")
            procs.append(first)
            handle = await durable.start(
                "go",
                id=f"can-kill-{adapter}-{uuid.uuid4().hex[:6]}",
                continue_as_new=ContinueAsNew(every_steps=EVERY),
                **options_for(adapter),
            )
            first_run = (await runtime.client.get_workflow_handle(handle.id).describe()).run_id
            await wait_for_new_segment(runtime.client, handle.id, first_run, first)
            first.kill()  # right after the first boundary
            seen_at_kill = dict(server.steps_seen())
            tools_at_kill = executed(calls)
            procs.append(WorkerProcess([spec], env, tmp_path / "w2.log"))
            result = await handle.result()
            # Read while a worker hosts the agent: earlier segments' events are read through
            # queries that replay them.
            raw = await handle.raw_result()
            assert raw.segments >= 2
            await check_events(handle, raw.segments)
        seen = server.steps_seen()
        tools = executed(calls)

    assert output_of(adapter, result) == expected
    # Every model call that completed before the kill was made once; only the call the new
    # segment may have had in flight at the kill (the last one seen) may have been made twice.
    turns = sorted(t for (_, t) in seen_at_kill)
    assert turns, "no model call completed before the kill"
    for turn in turns[:-1]:
        assert seen[("gpt-long", turn)] == 1, (turn, seen)
    assert set(seen) == {("gpt-long", t) for t in range(TOOL_TURNS + 1)}
    assert sum(seen.values()) <= TOOL_TURNS + 2
    for key in list(tools_at_kill)[:-1]:
        assert tools[key] == 1, tools
    assert sorted(tools) == sorted(f"lookup:k{i}" for i in range(TOOL_TURNS))
    assert sum(tools.values()) <= TOOL_TURNS + 1
    desc = await runtime.client.get_workflow_handle(handle.id).describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED


@pytest.mark.parametrize("adapter", ["openai_agents", "pydantic_ai"], indirect=True)
async def test_an_approval_pending_at_the_boundary_is_answered_after_it(
    adapter: str, runtime: Runtime, task_queue: str, worker: Any
) -> None:
    from hitl_helpers import build_agent, output_of, wait_pending, wrap

    refunds: list[str] = []

    def lookup(order: str) -> str:
        return f"order {order}: paid"

    def refund(order: str) -> str:
        refunds.append(order)
        return f"refunded {order}"

    script = [
        Turn.tool_calls(ToolCall("lookup", {"order": "o-1"})),
        Turn.tool_calls(ToolCall("refund", {"order": "o-1"})),
        Turn.text("refunded o-1"),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent(
            adapter,
            server,
            f"can-hitl-{adapter}",
            {"lookup": lookup, "refund": refund},
            approval=("refund",),
        )
        handle = await wrap(agent, runtime, task_queue).start(
            "refund o-1", continue_as_new=ContinueAsNew(every_steps=1)
        )
        pending = await wait_pending(handle)
        assert [p.tool for p in pending] == ["refund"]
        # The approval was asked in one segment and is answered in the next one.
        segments = await handle.runtime.client.get_workflow_handle(handle.id).query(
            "tether.segments"
        )
        assert len(segments) >= 3
        assert refunds == []
        await handle.approve(pending[0].id)
        result = await handle.result()
        assert output_of(result) == "refunded o-1"
        assert refunds == ["o-1"]
        events = [e async for e in handle.events()]
        types = [e.type for e in events]
        assert types.count("approval.requested") == 1
        assert types.count("approval.answered") == 1
        assert [e.offset for e in events] == list(range(len(events)))
        assert server.steps_seen() == {("gpt-4o", t): 1 for t in range(3)}


async def test_an_adapter_that_cannot_snapshot_fails_clearly_before_the_engine_limit(
    runtime: Runtime, task_queue: str, model_env: ScriptedModelServer, monkeypatch: Any
) -> None:
    """Without Capability.CONTINUE_AS_NEW a run never continues as new; past the history
    limit (lowered here) it fails with HistoryLimitReached, naming the cause and the fix."""
    from apps import long_apps
    from tether.core import run as run_module
    from tether.core.contract import Capability
    from tether.core.handle import DurableAgent

    agent = long_apps.rawloop_agent()
    from tether_rawloop.adapter import RawLoopAdapter

    class OneHistory(RawLoopAdapter):
        name = "rawloop_one_history"
        capabilities = RawLoopAdapter.capabilities - {Capability.CONTINUE_AS_NEW}

    monkeypatch.setattr(run_module, "HISTORY_EVENTS_LIMIT", 60)
    durable = DurableAgent(
        agent, OneHistory(), runtime=runtime, task_queue=task_queue, local_worker=False
    )
    try:
        async with runtime.worker(task_queue=task_queue):
            handle = await durable.start(
                "go", max_turns=40, continue_as_new=ContinueAsNew(every_steps=2)
            )
            with pytest.raises(tether.RunFailedError) as failed:
                await handle.result()
    finally:
        from tether import plugins

        plugins._extra[:] = [p for p in plugins._extra if p not in long_apps._registered]
        long_apps._registered.clear()
        plugins.installed.cache_clear()
    assert failed.value.error_type == "HistoryLimitReached"
    assert "cannot continue as new" in failed.value.reason
    assert "Fix:" in failed.value.reason
    raw = await runtime.client.get_workflow_handle(handle.id).describe()
    assert raw.run_id == raw.raw_description.workflow_execution_info.first_run_id
    # It stopped before a model call: fewer model calls than the script has.
    assert 0 < len(model_env.requests) < TOOL_TURNS + 1
