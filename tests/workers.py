"""Worker subprocesses for crash tests: started by `tether worker`, killed by pid."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client

import tether
from tether.core.runtime import Runtime, agent_queue
from tether.core.steps import running_steps
from tether.testing import ScriptedModelServer, WorkerProcess, worker_processes
from tether.testing._history import StepRecord, history_stats

DELAY = 0.25  # each model reply and tool takes this long, so a kill lands between steps


async def wait_for_completed_steps(
    client: Client, run_id: str, n: int, worker: WorkerProcess, timeout: float = 60
) -> list[StepRecord]:
    """Poll the run's history until ``n`` steps completed (the worker must stay alive)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await history_stats(client, run_id)
        done = stats.completed()
        if len(done) >= n:
            return done
        if not worker.alive():
            raise AssertionError(f"worker died early; log:\n{worker.log.read_text()[-3000:]}")
        if loop.time() > deadline:
            raise AssertionError(f"only {len(done)} of {n} steps completed in {timeout}s")
        await asyncio.sleep(0.02)


async def steps_ended(timeout: float = 60.0, settle: float = 1.0) -> None:
    """Wait until no step's work runs in this process, then ``settle`` seconds for the last
    attempt's result to reach the engine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while running_steps():
        assert loop.time() < deadline, f"a step still runs in this process after {timeout:g}s"
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle)


async def wait_until_polling(
    client: Client, task_queue: str, timeout: float = 30, *, since: datetime | None = None
) -> None:
    """Wait until some worker polls ``task_queue`` (a started worker takes a moment).

    ``since``: only a poll made after that moment counts. The engine goes on listing a
    SIGKILLed worker as a poller for minutes, so a test replacing one passes the kill time
    to wait for the new worker's own poll."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            retry=True,  # CI: the engine once answered one ask "operation was canceled"
        )
        if any(
            since is None or p.last_access_time.ToDatetime(tzinfo=UTC) > since for p in resp.pollers
        ):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker polled {task_queue!r} within {timeout}s")


def executed(calls_file: Path) -> Counter[str]:
    if not calls_file.exists():
        return Counter()
    return Counter(calls_file.read_text().split())


async def crash_and_resume(
    runtime: Runtime,
    worker_env: dict[str, str],
    tmp_path: Path,
    server: ScriptedModelServer,
    spec: str,
    agent: Any,
    prompt: str,
    kill_after: int,
    **run_options: Any,
) -> tuple[Any, str, list[Any], Counter[str]]:
    """Run ``agent``; SIGKILL its worker once ``kill_after`` steps completed; resume."""
    calls = tmp_path / f"calls-{kill_after}.txt"
    env = dict(worker_env, OPENAI_BASE_URL=server.base_url, TETHER_TEST_CALLS=str(calls))
    env["TETHER_TEST_TOOL_DELAY"] = str(DELAY)
    durable = tether.durable(agent, runtime=runtime, local_worker=False)
    durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)  # as the worker
    with worker_processes() as procs:
        first = WorkerProcess([spec], env, tmp_path / f"w1-{kill_after}.log")
        procs.append(first)
        run_id = f"crash-{kill_after}-{uuid.uuid4().hex[:6]}"
        handle = await durable.start(prompt, id=run_id, **run_options)
        done = await wait_for_completed_steps(runtime.client, handle.id, kill_after, first)
        first.kill()
        procs.append(WorkerProcess([spec], env, tmp_path / f"w2-{kill_after}.log"))
        result = await handle.result()
    return result, handle.id, done, executed(calls)
