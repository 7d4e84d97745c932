"""A run task whose loop computes for longer than the engine SDK's 2 s deadlock limit (a
continued segment restoring thousands of conversation items, on a loaded machine) is not
taken for a deadlock: the run goes on, its task never failed."""

from __future__ import annotations

import time
from typing import Any

from agents import Agent, OpenAIResponsesModel, RunContextWrapper
from openai import AsyncOpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

import tether
from tether.core.runtime import ACTIVATION_LIMIT, Runtime
from tether.testing import ScriptedModelServer, Turn

BUSY = 3.0  # seconds of computing in one run task: past the SDK's 2 s, within ours


async def test_a_long_computing_run_task_is_not_a_deadlock(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    assert ACTIVATION_LIMIT > BUSY
    turns: list[int] = []

    def instructions(ctx: RunContextWrapper[Any], agent: Agent[Any]) -> str:
        # Runs in the run's own loop (the run task), before the model step.
        turns.append(1)
        if len(turns) == 1:
            end = time.monotonic() + BUSY
            while time.monotonic() < end:  # computing, not waiting
                sum(range(1000))
        return "Answer briefly."

    with ScriptedModelServer([Turn.text("done")]) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        agent = Agent(
            name="heavy-task",
            instructions=instructions,
            model=OpenAIResponsesModel(model="gpt-test", openai_client=client),
        )
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start("hi")
        result = await handle.result()

    assert result.final_output == "done"
    history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
    failed = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failed == []
