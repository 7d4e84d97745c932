"""Exactly once under load: the small version of bench/exactly_once.py.

Runs on one `tether worker` subprocess against the scripted model server; calls are counted
where they are billed (the server) and where the side effect happens (the tool's own file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import AgentWorker, Runtime
from tether.core.store import BlobStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from exactly_once import measure


def _one_tool_agent(server: Any, name: str, tool: Any) -> Any:
    """An OpenAI Agents SDK agent with one tool, answered by ``server``."""
    from agents import Agent, OpenAIResponsesModel
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    return Agent(
        name=name,
        tools=[tool],
        model=OpenAIResponsesModel(model=f"gpt-{name}", openai_client=client),
    )


def _intercepted_worker(runtime: Runtime, task_queue: str, inbound: type[Any]) -> Any:
    """A worker hosting Tether's runs and steps with ``inbound`` (an
    ``ActivityInboundInterceptor`` class) in front of every step attempt."""
    from temporalio.worker import (
        ActivityInboundInterceptor,
        Interceptor,
        UnsandboxedWorkflowRunner,
        Worker,
    )

    from tether.core.runtime import HEARTBEAT_SEND_INTERVAL, worker_options

    class Intercepting(Interceptor):
        def intercept_activity(
            self, next: ActivityInboundInterceptor
        ) -> ActivityInboundInterceptor:
            return inbound(next)  # type: ignore[no-any-return]

    options = worker_options(runtime.store)
    return Worker(
        runtime.client,
        task_queue=task_queue,
        workflows=options["workflows"],
        activities=options["activities"],
        interceptors=[*options["interceptors"], Intercepting()],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_heartbeat_throttle_interval=HEARTBEAT_SEND_INTERVAL,
    )


async def _run_lookup(
    runtime: Runtime, task_queue: str, name: str, lookup: Any, inbound: type[Any]
) -> list[Any]:
    """One run of a one-tool agent (the model calls ``lookup`` once, then answers "done") on
    a worker with ``inbound`` in front of its steps; the model requests it made."""
    import tether
    from tether.testing import ScriptedModelServer, ToolCall, Turn

    script = [Turn.tool_calls(ToolCall("lookup", {})), Turn.text("done")]
    with ScriptedModelServer(script) as server:
        agent = _one_tool_agent(server, name, lookup)
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with _intercepted_worker(runtime, task_queue, inbound):
            result = await durable.run("go")
        assert result.final_output == "done"
        return list(server.requests)


async def _measure(
    engine: EmbeddedEngine, store: BlobStore, tmp_path: Path, n: int, mode: str
) -> None:
    result = await measure(n, mode, address=engine.address, store=store.url, workdir=tmp_path)
    assert result.completed == n, result
    assert result.provider_calls == result.provider_needed, result
    assert result.tool_runs == result.tool_needed, (result, result.duplicate_keys)


async def test_fifty_concurrent_runs_make_each_call_once(
    engine: EmbeddedEngine, store: BlobStore, tmp_path: Path
) -> None:
    await _measure(engine, store, tmp_path, 50, "plain")


async def test_a_worker_paused_eight_seconds_mid_step_makes_no_call_twice(
    engine: EmbeddedEngine, store: BlobStore, tmp_path: Path
) -> None:
    # The pause outlasts the 4 s heartbeat timeout: the engine retries the steps in flight,
    # and the retries join the work the paused attempts finish after SIGCONT.
    await _measure(engine, store, tmp_path, 20, "sigstop")


async def test_a_tool_blocking_the_loop_six_seconds_neither_fails_nor_repeats(
    engine: EmbeddedEngine, store: BlobStore, tmp_path: Path
) -> None:
    # Every step of the worker stalls with the loop; the heartbeat thread keeps them alive.
    await _measure(engine, store, tmp_path, 20, "block")


@pytest.mark.parametrize("payload", [{"call_id": "call_7"}, {"tool_call_id": "c9"}, {"x": 1}])
def test_the_idempotency_key_is_the_run_and_call_id(payload: dict[str, str]) -> None:
    from tether.core.contract import StepRequest
    from tether.core.steps import idempotency_key

    request = StepRequest(run_id="r1", agent="a", payload=payload, step=3)
    key = idempotency_key(request)
    call = payload.get("call_id") or payload.get("tool_call_id")
    assert key == (f"r1:{call}" if call else "r1:step-3")
    other = StepRequest(run_id="r2", agent="a", payload=payload, step=3)
    assert idempotency_key(other) != key


async def test_steps_heartbeat_through_the_sdk_core_not_the_loop(
    runtime: Runtime, task_queue: str, worker: AgentWorker
) -> None:
    """The heartbeat thread reaches the SDK's core recorder (a private path): should an SDK
    release change it, steps fall back to loop heartbeats, and this test says so."""
    from agents import function_tool

    import tether
    from tether.core import steps
    from tether.testing import ScriptedModelServer, ToolCall, Turn

    found: list[bool] = []

    @function_tool
    async def probe() -> str:
        """Report whether this step beats from the heartbeat thread."""
        found.append(steps._core_recorder() is not None)
        return "ok"

    script = [Turn.tool_calls(ToolCall("probe", {})), Turn.text("done")]
    with ScriptedModelServer(script) as server:
        agent = _one_tool_agent(server, "probe", probe)
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        assert (await durable.run("go")).final_output == "done"
    assert found == [True]


async def test_a_step_that_starts_after_its_heartbeat_timeout_leaves_the_work_to_the_next_attempt(
    runtime: Runtime, task_queue: str
) -> None:
    """A busy worker may start a step's code after the engine has already given the step to a
    next attempt (on another worker, a second model or tool call). The late attempt asks the
    engine first and does no work; the next attempt does it, once.

    The first attempt of the tool step is held 3.5 s before its code runs (the heartbeat
    timeout is 2 s); the next attempt is held until the first has started and returned.
    Without the check the first attempt would run the tool and the next one join it."""
    import asyncio

    from agents import function_tool
    from temporalio import activity
    from temporalio.worker import (
        ActivityInboundInterceptor,
        ExecuteActivityInput,
    )

    import tether
    from tether.adapters.openai_agents._workflow_side import TOOL_STEP

    first_done = asyncio.Event()
    ran_in: list[int] = []

    class Late(ActivityInboundInterceptor):
        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            info = activity.info()
            if info.activity_type != TOOL_STEP:
                return await self.next.execute_activity(input)
            if info.attempt == 1:
                await asyncio.sleep(3.5)
                try:
                    return await self.next.execute_activity(input)
                finally:
                    first_done.set()
            await first_done.wait()
            return await self.next.execute_activity(input)

    @function_tool
    async def lookup() -> str:
        """Look the record up."""
        step = tether.current_step()
        assert step is not None
        ran_in.append(step.attempt)
        return "found"

    requests = await _run_lookup(runtime, task_queue, "late", lookup, Late)
    assert len(requests) == 2
    assert len(ran_in) == 1, ran_in
    assert ran_in[0] >= 2, "the late first attempt ran the tool"


async def test_attempts_lost_with_a_worker_do_not_use_up_a_steps_attempts_for_errors(
    runtime: Runtime, task_queue: str
) -> None:
    """A tool step's policy allows three attempts that end in an error. Its first two
    attempts are lost (held past the heartbeat timeout before their code runs, as when a
    worker dies or stalls); the tool then fails twice and succeeds at its third run.
    Counted with the lost ones, the third attempt would have been the last one allowed."""
    import asyncio

    from agents import function_tool
    from temporalio import activity
    from temporalio.worker import (
        ActivityInboundInterceptor,
        ExecuteActivityInput,
    )

    import tether
    from tether.adapters.openai_agents._workflow_side import TOOL_STEP
    from tether.core.contract import TOOL_POLICY

    assert TOOL_POLICY.max_attempts == 3
    runs: list[int] = []  # the attempt of each run of the tool

    class Lose(ActivityInboundInterceptor):
        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            if activity.info().activity_type == TOOL_STEP and activity.info().attempt <= 2:
                # Past the heartbeat timeout, before the step's first beat.
                await asyncio.sleep(TOOL_POLICY.heartbeat.total_seconds() + 0.6)
            return await self.next.execute_activity(input)

    @function_tool
    async def lookup() -> str:
        """Look the record up."""
        step = tether.current_step()
        assert step is not None
        runs.append(step.attempt)
        if len(runs) < 3:
            raise RuntimeError("the records service is down")
        return "found"

    requests = await _run_lookup(runtime, task_queue, "lost", lookup, Lose)
    tool_output = json.dumps(requests[-1].body)
    assert "found" in tool_output, tool_output
    assert runs == [3, 4, 5], runs
