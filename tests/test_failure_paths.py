"""Failures carry module and line, never the worker's absolute paths (Temporal UI, `runs show`)."""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from agents import Agent, OpenAIChatCompletionsModel
from openai import AsyncOpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure

import tether
from tether.core.codec import Keyring
from tether.core.converter import data_converter, module_of, short_paths
from tether.core.runtime import Runtime
from tether.testing import Fault, ScriptedModelServer, Turn

ABSOLUTE = re.compile(r'File "/|(^|\s)/[^\s:]+\.py')


def chain(failure: Failure) -> list[Failure]:
    out = [failure]
    while failure.HasField("cause"):
        failure = failure.cause
        out.append(failure)
    return out


def test_frames_name_modules_not_paths() -> None:
    import agents.run

    assert module_of(agents.run.__file__) == "agents.run"
    assert module_of(tether.__file__) == "tether"
    assert module_of("<frozen importlib._bootstrap>") == "<frozen importlib._bootstrap>"
    assert module_of("/nowhere/on/sys/path/app.py") == "app.py"
    trace = f'  File "{agents.run.__file__}", line 12, in run\n    await x()\n'
    assert short_paths(trace) == "  agents.run:12, in run\n    await x()\n"


def test_encrypted_failures_are_shortened_before_they_are_encoded() -> None:
    converter = data_converter(None, Keyring.generate("k1"))
    try:
        sys.modules["json"].loads("{")
    except ValueError as exc:
        failure = Failure()
        converter.failure_converter.to_failure(exc, converter.payload_converter, failure)
    assert failure.message == "Encoded failure" and failure.stack_trace == ""
    [attrs] = converter.payload_converter.from_payloads([failure.encoded_attributes])
    assert "json.decoder:" in attrs["stack_trace"]
    assert not ABSOLUTE.search(attrs["stack_trace"]), attrs["stack_trace"]


async def run_failing(
    runtime: Runtime, task_queue: str, script: list[Turn], name: str, **agent: Any
) -> tuple[str, list[Any]]:
    with ScriptedModelServer(script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        model = OpenAIChatCompletionsModel(model="gpt-paths", openai_client=client)
        durable = tether.durable(
            Agent(name=name, model=model, **agent),
            runtime=runtime,
            task_queue=task_queue,
            local_worker=False,
        )
        async with runtime.worker(task_queue=task_queue):
            handle = await durable.start("Hi", id=f"{name}-{task_queue}")
            with pytest.raises(tether.RunFailedError):
                await handle.result()
    history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
    return handle.id, list(history.events)


async def test_a_run_failing_in_its_loop_shows_modules_and_lines(
    runtime: Runtime, task_queue: str
) -> None:
    # Text where the agent's output type is a number: the framework's loop raises.
    run_id, events = await run_failing(
        runtime, task_queue, [Turn.text("not a number")], "paths-loop", output_type=int
    )
    [closing] = [
        e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    ]
    failures = chain(closing.workflow_execution_failed_event_attributes.failure)
    traces = "\n".join(f.stack_trace for f in failures)
    assert "tether.core.run:" in traces and "agents.run:" in traces, traces
    assert not ABSOLUTE.search(traces), traces
    desc = await (await tether.get_run(run_id, runtime)).describe()
    assert not ABSOLUTE.search(str(desc.failures)), desc.failures


async def test_a_failed_step_shows_modules_and_lines(runtime: Runtime, task_queue: str) -> None:
    # A 400 from the model is not retried: the model step fails on the worker.
    _, events = await run_failing(
        runtime, task_queue, [Turn.text("x", faults=[Fault.server_error(400)])], "paths-step"
    )
    [failed] = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    failures = chain(failed.activity_task_failed_event_attributes.failure)
    traces = "\n".join(f.stack_trace for f in failures)
    assert "tether.core.steps:" in traces, traces
    assert not ABSOLUTE.search(traces), traces
