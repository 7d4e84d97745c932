"""Worker logs: one line per run start/finish/failure and per failed step attempt, replay-safe,
through `logging`; Temporal's own chatter kept off standard output."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, OpenAIChatCompletionsModel, function_tool
from openai import AsyncOpenAI

import tether
from tether.core import registry
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.testing import Fault, ScriptedModelServer, ToolCall, Turn

HERE = Path(__file__).parent


def fields(records: list[logging.LogRecord], event: str) -> list[dict[str, Any]]:
    return [
        r.tether  # type: ignore[attr-defined]
        for r in records
        if getattr(r, "tether", {}).get("event") == event
    ]


def agent_for(server: ScriptedModelServer, name: str) -> Agent[Any]:
    @function_tool
    def get_weather_alerts(state: str) -> str:
        """Alerts for a state."""
        return f"alerts for {state}: none"

    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    model = OpenAIChatCompletionsModel(model="gpt-log", openai_client=client)
    return Agent(name=name, tools=[get_weather_alerts], model=model)


async def test_one_line_per_run_start_finish_and_failed_attempt_even_when_replayed(
    runtime: Runtime, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With no run cache, every run task replays the run from its start: still one line each."""
    caplog.set_level(logging.INFO, logger="tether")
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("CA: none", faults=[Fault.server_error(500)]),
    ]
    with ScriptedModelServer(script) as server:
        durable = tether.durable(
            agent_for(server, "log-weather"),
            runtime=runtime,
            task_queue=task_queue,
            local_worker=False,
        )
        async with runtime.worker(task_queue=task_queue, max_cached_runs=0):
            handle = await durable.start("Alerts?", id=f"log-run-{task_queue}")
            result = await handle.result()
    assert result.final_output == "CA: none"
    records = caplog.records
    run = {"run_id": handle.id, "agent": "log-weather"}
    [started] = fields(records, "run started")
    assert started | run == started and started["adapter"] == "openai_agents"
    [finished] = fields(records, "run finished")
    assert finished | run == finished and finished["steps"] == 3
    [failed] = fields(records, "step attempt failed")
    assert failed | run == failed
    assert (failed["step"], failed["attempt"], failed["kind"], failed["retrying"]) == (
        3,
        1,
        "model",
        True,
    )
    line = next(r for r in records if getattr(r, "tether", {}).get("event") == "run finished")
    assert line.getMessage().startswith(f"run finished run_id={handle.id} agent=log-weather ")
    assert not fields(records, "run failed")


async def test_a_failed_run_and_a_failing_run_task_are_logged(
    runtime: Runtime, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether")
    caplog.set_level(logging.WARNING, logger="temporalio.core")
    script = [Turn.text("never", faults=[Fault.server_error(400)] * 20)]
    with ScriptedModelServer(script) as server:
        durable = tether.durable(
            agent_for(server, "log-failing"), runtime=runtime, task_queue=task_queue,
            local_worker=False,
        )  # fmt: skip
        async with runtime.worker(task_queue=task_queue):
            handle = await durable.start("Alerts?", id=f"log-fail-{task_queue}")
            with pytest.raises(tether.RunFailedError):
                await handle.result()
            # A run of an agent this worker does not host: its run task fails, and is retried.
            registry.clear()
            orphan = await durable.start("Alerts?", id=f"log-orphan-{task_queue}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not fields(caplog.records, "run task failed, to be retried"):
                assert loop.time() < deadline, "no run task failure logged"
                await asyncio.sleep(0.2)
            await runtime.client.get_workflow_handle(orphan.id).terminate("test done")
    [failed] = fields(caplog.records, "run failed")
    assert failed["run_id"] == handle.id and failed["agent"] == "log-failing"
    [step] = fields(caplog.records, "step failed")
    assert step["retrying"] is False and step["step"] == 1
    task = fields(caplog.records, "run task failed, to be retried")[0]
    assert task["run_id"] == orphan.id and task["error_type"] == "AgentNotRegisteredError"
    # Temporal's core says so too, through `logging` (its console output is off).
    core = [r for r in caplog.records if r.name.startswith("temporalio.core")]
    assert core, [r.name for r in caplog.records]


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        cwd=HERE,
    )


async def test_tether_run_keeps_stdout_for_the_answer_and_logs_json_on_stderr(
    engine: EmbeddedEngine, runtime: Runtime, task_queue: str, tmp_path: Path
) -> None:
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        # Three: the SDK's own client retries twice before the step's attempt fails.
        Turn.text("CA: heat advisory", faults=[Fault.server_error(500)] * 3),
    ]
    env = dict(os.environ)
    env.update(
        TEMPORAL_ADDRESS=engine.address,
        TETHER_STORE=runtime.store.url,
        TETHER_TASK_QUEUE=task_queue,
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    outputs = {}
    for level in ("warning", "debug"):
        with ScriptedModelServer(script) as server:
            proc = await cli(
                "run", "apps.openai_apps:weather", "Alerts in CA?", "--local-worker", "--quiet",
                "--log-level", level, "--log-format", "json",
                env=dict(env, OPENAI_BASE_URL=server.base_url),
            )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "CA: heat advisory\n"  # nothing but the answer
        lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
        outputs[level] = lines
        [attempt] = [x for x in lines if x.get("event") == "step attempt failed"]
        assert attempt["level"] == "warning" and attempt["logger"] == "tether.step"
        assert attempt["agent"] == "weather" and attempt["step"] == 3
    # Temporal's own warnings (its activity worker's) only at debug, and on stderr.
    temporal = {lvl: [x for x in out if x["logger"].startswith("temporalio")] for lvl, out in
                outputs.items()}  # fmt: skip
    assert temporal["warning"] == []
    assert any("Completing activity as failed" in x["message"] for x in temporal["debug"])
