"""Routing: a worker never fails a run for an agent it does not host; runs wait for a
worker that does, `describe()` says why they wait, and `tether run` hosts the agent itself
when no live worker takes its run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pydantic_ai
import pytest
from agents import Agent

import tether
from test_cli import tether_cli
from test_openai_agents import responses_model
from tether.core.runtime import Runtime, agent_queue
from tether.errors import StepInputError
from tether.testing import ScriptedModelServer, ToolCall, Turn
from workers import (
    DELAY,
    WorkerProcess,
    wait_for_completed_steps,
    wait_until_polling,
    worker_processes,
)

HERE = Path(__file__).parent
ROOT = HERE.parent


async def wait_for_problem(handle: tether.RunHandle, text: str, timeout: float = 60) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        desc = await handle.describe()
        if desc.problem and text in desc.problem:
            assert desc.status == "running"
            return desc.problem
        assert loop.time() < deadline, f"describe() never said {text!r}; last: {desc.problem}"
        await asyncio.sleep(0.5)


async def test_workers_of_different_agents_share_a_namespace(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    script = {
        "gpt-weather": [
            Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
            Turn.text("CA: heat advisory"),
        ],
        "gpt-pai-weather": [
            Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"})),
            Turn.text("NY: quiet"),
        ],
    }
    prefix = worker_env["TETHER_TASK_QUEUE"]
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        procs.append(WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "oa.log"))
        procs.append(WorkerProcess(["apps.pydantic_apps:weather"], env, tmp_path / "pai.log"))
        await wait_until_polling(runtime.client, agent_queue(prefix, "weather"))
        await wait_until_polling(runtime.client, agent_queue(prefix, "pai-weather"))
        # One run of each agent, started side by side from the CLI; neither CLI hosts
        # anything, so each run can only complete on the worker that hosts its agent.
        runs = [
            ("apps.pydantic_apps:weather", "--context", '{"user": "ada"}'),
            ("apps.openai_apps:weather",),
        ]
        procs_out = await asyncio.gather(
            *(
                tether_cli("run", spec, "alerts?", *rest, "--no-local-worker", "--quiet", env=env)
                for spec, *rest in runs
            )
        )
    for (spec, *_), proc in zip(runs, procs_out, strict=True):
        assert proc.returncode == 0, (spec, proc.stderr)
        assert "AgentNotRegistered" not in proc.stderr + proc.stdout
        expected = "CA: heat advisory" if "openai" in spec else "NY: quiet"
        assert proc.stdout.strip() == expected
    assert "pai-weather" not in (tmp_path / "oa.log").read_text()


async def test_a_run_waits_for_a_worker_that_hosts_its_agent(runtime: Runtime) -> None:
    name = f"lonely-{uuid.uuid4().hex[:6]}"
    with ScriptedModelServer({"gpt-lonely": [Turn.text("finally")]}) as server:
        agent = Agent(name=name, model=responses_model(server, "gpt-lonely"))
        durable = tether.durable(agent, runtime=runtime, local_worker=False)
        handle = await durable.start("hello?")
        problem = await wait_for_problem(handle, "no worker hosts agent")
        queue = runtime.queue_for(name)
        assert f"queue {queue!r}" in problem
        assert "tether worker" in problem
        assert (await handle.describe()).agent == name
        # A worker that hosts it arrives: the run starts and completes.
        async with runtime.worker():
            result = await handle.result()
    assert result.final_output == "finally"


async def test_a_worker_on_a_shared_queue_never_fails_a_run_it_cannot_host(
    runtime: Runtime, task_queue: str
) -> None:
    with ScriptedModelServer({"*": [Turn.text("hosted")]}) as server:
        wanted = Agent(name=f"wanted-{task_queue}", model=responses_model(server))
        other = pydantic_ai.Agent("test", name=f"other-{task_queue}")
        tether.durable(other, runtime=runtime, task_queue=task_queue, local_worker=False)
        # This process hosts only `other` on the queue when the run arrives.
        async with runtime.worker(task_queue=task_queue):
            from tether.core.contract import RunRequest
            from tether.core.run import WORKFLOW_NAME

            await runtime.client.start_workflow(
                WORKFLOW_NAME,
                RunRequest(
                    agent=wanted.name, adapter="openai_agents", input="hi", source="app:wanted"
                ),
                id=f"shared-{task_queue}",
                task_queue=task_queue,
            )
            handle = tether.RunHandle(runtime, f"shared-{task_queue}", None)
            problem = await wait_for_problem(handle, "is not registered on this worker")
            assert "`tether worker app:wanted`" in problem
            # The agent is registered; the next attempt of the run's task finds it.
            tether.durable(wanted, runtime=runtime, task_queue=task_queue, local_worker=False)
            raw = await handle.raw_result()
    assert raw.output["final_output"]["data"] == "hosted"


async def test_tether_run_hosts_the_agent_when_the_only_worker_was_killed(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import weather

    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=DELAY),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"}), delay=DELAY),
        Turn.text("done", delay=DELAY),
    ]
    calls = tmp_path / "calls.txt"
    run_id = f"dead-{uuid.uuid4().hex[:6]}"
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url, TETHER_TEST_CALLS=str(calls))
        env["TETHER_TEST_TOOL_DELAY"] = str(DELAY)
        first = WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w.log")
        procs.append(first)
        durable = tether.durable(weather, runtime=runtime, local_worker=False)
        durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
        await durable.start("alerts?", id=run_id)
        done = await wait_for_completed_steps(runtime.client, run_id, 2, first)
        first.kill()  # the engine keeps listing it as a poller for minutes
        proc = await tether_cli(
            "run", "apps.openai_apps:weather", "alerts?", "--id", run_id, "--quiet", env=env
        )
        seen = server.steps_seen()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert "hosting apps.openai_apps:weather in this process" in proc.stderr
    completed_models = sum(1 for s in done if s.name == "openai_agents.model")
    for turn in range(completed_models):
        assert seen[("gpt-weather", turn)] == 1, seen


@pytest.mark.parametrize("framework", ["pydantic_ai", "openai_agents"])
async def test_deps_defined_in_a_script_reach_a_worker(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path, framework: str
) -> None:
    lane = "gpt-script-pai" if framework == "pydantic_ai" else "gpt-script-oa"
    tool = "whoami" if framework == "pydantic_ai" else "who"
    script = {lane: [Turn.tool_calls(ToolCall(tool, {})), Turn.text("you are ada")]}
    spec = "script_app:pai_agent" if framework == "pydantic_ai" else "script_app:oa_agent"
    run_id = f"script-{framework}-{uuid.uuid4().hex[:6]}"
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE / "apps"), env["PYTHONPATH"]])
        procs.append(WorkerProcess([spec], env, tmp_path / "w.log"))
        # `python script_app.py`: the deps type is `__main__.Deps` in this program.
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(HERE / "apps" / "script_app.py"), framework, run_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:] + procs[0].tail()
        assert proc.stdout.strip() == "you are ada"
        tool_result = [r for r in server.requests if "you are ada (" in r.body_text]
    # The worker rebuilt the deps as its own `script_app.Deps`, not `__main__.Deps`.
    assert tool_result and "(script_app)" in tool_result[-1].body_text


async def test_a_context_type_no_worker_can_import_is_refused_at_start() -> None:
    from dataclasses import dataclass

    @dataclass
    class Local:
        user: str

    agent = Agent(name="local-ctx", model="gpt-x")
    durable = tether.durable(agent, local_worker=False)
    with pytest.raises(StepInputError, match=r"inside a function.*Fix: define the type"):
        await durable.start("hi", context=Local("ada"))


async def test_events_of_an_ended_run_its_queue_workers_cannot_replay(
    runtime: Runtime, task_queue: str
) -> None:
    """A run's events are read by a query, which a worker answers by replaying the run. When
    the only worker on its (pinned) queue lacks the agent, that replay fails; reading the
    events of the ended run then stops instead of raising, and its result is still read."""
    from tether.core import registry

    with ScriptedModelServer({"*": [Turn.text("hosted")]}) as server:
        wanted = Agent(name=f"gone-{task_queue}", model=responses_model(server))
        durable = tether.durable(wanted, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with runtime.worker(task_queue=task_queue):
            handle = await durable.start("hi")
            await handle.raw_result()
    registry.clear()
    other = pydantic_ai.Agent("test", name=f"other-{task_queue}")
    tether.durable(other, runtime=runtime, task_queue=task_queue, local_worker=False)
    async with runtime.worker(task_queue=task_queue):  # a fresh worker: it must replay
        events = [e async for e in handle.events()]
        raw = await handle.raw_result()
    assert events == []  # none could be read here (the run's result can)
    assert raw.output["final_output"]["data"] == "hosted"


async def test_a_run_beside_a_worker_this_process_built_uses_that_worker(
    runtime: Runtime,
) -> None:
    """A script that builds its worker and runs the agent in one process: the run uses that
    worker (before, its own local worker collided with it in the engine SDK, a Rust error
    and backtrace). The other order, a worker built after a run started one, is refused
    with the fix."""
    from tether.errors import ConfigurationError

    queue = f"beside-{uuid.uuid4().hex[:8]}"
    with ScriptedModelServer([Turn.text("hello")]) as server:
        agent = Agent(name="beside", model=responses_model(server))
        durable = tether.durable(agent, runtime=runtime, task_queue=queue)  # local worker on
        async with runtime.worker(task_queue=queue):
            assert (await durable.run("hi")).final_output == "hello"
        assert not runtime.hosts(queue)

    queue = f"after-{uuid.uuid4().hex[:8]}"
    with ScriptedModelServer([Turn.text("hello")]) as server:
        agent = Agent(name="after", model=responses_model(server))
        durable = tether.durable(agent, runtime=runtime, task_queue=queue)
        assert (await durable.run("hi")).final_output == "hello"
        assert runtime.hosts(queue)
        with pytest.raises(ConfigurationError, match="local_worker=False"):
            runtime.worker(task_queue=queue)
