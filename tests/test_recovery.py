"""Recovery and bounded reads.

- A worker killed during a step: the retried step resets the run's sticky queue, so the run's
  next task goes straight to a live worker instead of waiting out the dead worker's sticky
  queue (seen in the history: no task scheduled on a sticky queue and timed out there).
- A step lost with its worker is retried at once (the engine's retry policy holds 0.1 s), but a
  step that failed with an error still waits its policy's interval before its retry.
- The status query is a bounded summary (the latest entries and totals); the whole timeline
  is paged (``RunHandle.timeline``, ``tether runs show --from``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.worker import Worker

import tether
from tether.core import handle as handle_module
from tether.core import ops
from tether.core import run as run_module
from tether.core.runtime import Runtime, agent_queue
from tether.testing import (
    Fault,
    ScriptedModelServer,
    ToolCall,
    Turn,
    WorkerProcess,
    worker_processes,
)
from workers import wait_until_polling


async def until_arrived(server: ScriptedModelServer, turn: int, timeout: float = 300) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not server.arrived(turn=turn):
        assert loop.time() < deadline, f"no model call for turn {turn} within {timeout}s"
        await asyncio.sleep(0.05)


async def step_worker(runtime: Runtime, run_id: str, workers: list[WorkerProcess]) -> Any:
    """The worker process running the run's pending step."""
    for _ in range(600):
        desc = await runtime.client.get_workflow_handle(run_id).describe()
        for act in desc.raw_description.pending_activities:
            pid = act.last_worker_identity.split("@", 1)[0]
            for w in workers:
                if str(w.proc.pid) == pid:
                    return w
        await asyncio.sleep(0.1)
    raise AssertionError("no worker runs the run's step")


async def test_a_step_retried_after_its_worker_died_skips_the_dead_sticky_queue(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.recovery_app import agent

    script = [
        Turn.tool_calls(ToolCall("lookup", {"i": 1})),
        Turn.text("record 1 looked up", faults=[Fault.hang(600)]),  # the first attempt hangs
    ]
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        queue = agent_queue(env["TETHER_TASK_QUEUE"], "recovery")
        for i in range(2):  # one runs the run, the other stands by
            procs.append(WorkerProcess(["apps.recovery_app:agent"], env, tmp_path / f"w{i}.log"))
        await wait_until_polling(runtime.client, queue, timeout=300)
        durable = tether.durable(agent, runtime=runtime, local_worker=False)
        durable.task_queue = queue
        handle = await durable.start("look record 1 up", id=f"recover-{queue}")
        await until_arrived(server, turn=1)
        victim = await step_worker(runtime, handle.id, procs)
        victim.kill()
        result = await asyncio.wait_for(handle.result(), 300)
        assert result.output == "record 1 looked up"
        assert server.arrived(turn=1) == 2  # the hung attempt, then the retry on the standby
        assert server.count(turn=1) == 1  # answered once: the hung one never was
    events = [e async for e in runtime.client.get_workflow_handle(handle.id).fetch_history_events()]
    kinds = [e.event_type for e in events]
    completed = [
        i for i, k in enumerate(kinds) if k == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]
    retried = completed[-1]  # the model step: its attempt on the killed worker never completed
    assert events[retried].activity_task_completed_event_attributes
    scheduled = next(
        e for e in events[retried:] if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
    )
    # Straight to the run's queue, not to the dead worker's sticky queue...
    assert scheduled.workflow_task_scheduled_event_attributes.task_queue.kind == (
        TaskQueueKind.TASK_QUEUE_KIND_NORMAL
    )
    # ...so no task of the run timed out waiting there.
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT not in kinds[retried:]


def lookups(n: int) -> list[Turn]:
    return [*(Turn.tool_calls(ToolCall("lookup", {"i": i})) for i in range(n)), Turn.text("done")]


def lookup_agent(server: ScriptedModelServer, name: str) -> Agent[None, str]:
    """A Pydantic AI agent on ``server`` with one tool, ``lookup(i)``."""
    model = OpenAIChatModel("gpt-pai", provider=OpenAIProvider(base_url=server.base_url))
    agent: Agent[None, str] = Agent(model, name=name)

    @agent.tool_plain
    def lookup(i: int) -> str:
        """A record."""
        return f"record {i}"

    return agent


async def test_a_failed_step_waits_its_policy_interval_before_the_retry(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    """The engine's retry policy holds the short interval of a lost step (0.1 s), but a step
    that failed with an error still waits its policy's own: 1 s, then 2 s (TOOL_POLICY)."""
    attempts: list[tuple[int, float]] = []
    script = [Turn.tool_calls(ToolCall("flaky", {"i": 1})), Turn.text("got it")]
    with ScriptedModelServer(script) as server:
        model = OpenAIChatModel("gpt-pai", provider=OpenAIProvider(base_url=server.base_url))
        agent: Agent[None, str] = Agent(model, name="paced")

        @agent.tool_plain
        async def flaky(i: int) -> str:
            """A record, on the third try."""
            step = tether.current_step()
            assert step is not None
            attempts.append((step.attempt, time.monotonic()))
            if step.attempt < 3:
                raise ValueError(f"not yet (attempt {step.attempt})")
            return f"record {i}"

        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        result = await asyncio.wait_for(durable.run("look record 1 up"), 300)
    assert result.output == "got it"
    assert [a for a, _ in attempts] == [1, 2, 3]
    first_wait = attempts[1][1] - attempts[0][1]
    second_wait = attempts[2][1] - attempts[1][1]
    # Lower bounds only (a loaded machine makes them longer, never shorter); at the engine's
    # 0.1 s lost-step interval they would be 0.1 s and 0.2 s.
    assert first_wait >= 0.95, first_wait
    assert second_wait >= 1.9, second_wait


@pytest.fixture
def small_status(monkeypatch: pytest.MonkeyPatch) -> int:
    """The status summary cut to 3 entries, so a short run shows the bound."""
    monkeypatch.setattr(run_module, "STATUS_RECENT", 3)
    monkeypatch.setattr(handle_module, "STATUS_RECENT", 3)
    return 3


async def test_status_is_bounded_and_the_timeline_paged(
    runtime: Runtime, task_queue: str, worker: Worker, small_status: int
) -> None:
    with ScriptedModelServer(lookups(4)) as server:
        agent = lookup_agent(server, "paged")
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start("look them up")
        await handle.result()

        # The run's own query (answered by the worker replaying the closed run).
        status = await ops.query(handle._handle, run_module.STATUS_QUERY)
        assert status["timeline_total"] == 9  # 5 model calls, 4 tool calls
        assert [t["step"] for t in status["timeline"]] == [7, 8, 9]
        assert status["ledger_steps_total"] == 5
        assert len(status["ledger"]["steps"]) == small_status
        page = await ops.query(handle._handle, run_module.TIMELINE_QUERY, args=[2, 3])
        assert (page["offset"], page["total"]) == (2, 9)
        assert [t["step"] for t in page["entries"]] == [3, 4, 5]
        assert sorted(u["step"] for u in page["usage"]) == [3, 5]  # the model steps among them

        desc = await handle.describe()
        assert desc.timeline_total == 9
        assert [t["step"] for t in desc.timeline] == [7, 8, 9]
        whole = await handle.timeline(0, 100)
        assert (whole.offset, whole.total) == (0, 9)
        assert [t["step"] for t in whole.entries] == list(range(1, 10))
        assert [u.step for u in whole.usage] == [1, 3, 5, 7, 9]
        tail = await handle.timeline(8, 5)
        assert [t["step"] for t in tail.entries] == [9]
        with pytest.raises(ValueError, match="must be >= 0"):
            await handle.timeline(-1)


async def test_runs_show_pages_the_timeline(
    runtime: Runtime, task_queue: str, worker: Worker, engine: Any
) -> None:
    with ScriptedModelServer(lookups(30)) as server:
        agent = lookup_agent(server, "paged-cli")
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start("look them up")
        await handle.result()
    env = dict(os.environ, TEMPORAL_ADDRESS=engine.address, TETHER_STORE=runtime.store.url)

    def show(*extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "tether.cli", "runs", "show", handle.id, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    latest = show()  # 61 steps: the latest 50 are listed, and how to see the others
    assert "timeline entries 11-60 of 61" in latest
    assert "--from N" in latest
    first = show("--from", "0", "--limit", "2")
    rows = [line.split()[0] for line in first.splitlines() if line[:1].isdigit()]
    assert rows == ["1", "2"]
    assert "timeline entries 0-1 of 61" in first
